// A drawing as MNIST would have it: MNIST's digits were size-normalised to fit a 20x20 box
// (aspect ratio kept, anti-aliased), then placed in a 28x28 image with their centre of mass at
// the centre. A drawing prepared the same way looks like the data the model was trained on.

const SIDE = 28;
const BOX = 20;

/** 784 pixels (0..255) from ImageData of a white-on-black drawing, or null when it is blank. */
export function mnistPixels({ data, width, height }) {
  let left = width, right = -1, top = height, bottom = -1;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      if (data[4 * (y * width + x)] > 32) {
        left = Math.min(left, x); right = Math.max(right, x);
        top = Math.min(top, y); bottom = Math.max(bottom, y);
      }
    }
  }
  if (right < 0) return null;
  const w = right - left + 1;
  const h = bottom - top + 1;
  const scale = BOX / Math.max(w, h);
  const boxWidth = Math.max(1, Math.round(w * scale));
  const boxHeight = Math.max(1, Math.round(h * scale));
  // Area average: each source pixel adds to the box pixel it falls in (anti-aliasing).
  const sums = new Float64Array(boxWidth * boxHeight);
  const counts = new Float64Array(boxWidth * boxHeight);
  for (let y = top; y <= bottom; y++) {
    const by = Math.min(boxHeight - 1, Math.floor((y - top) * scale));
    for (let x = left; x <= right; x++) {
      const cell = by * boxWidth + Math.min(boxWidth - 1, Math.floor((x - left) * scale));
      sums[cell] += data[4 * (y * width + x)];
      counts[cell] += 1;
    }
  }
  let mass = 0, mx = 0, my = 0;
  const box = sums.map((sum, cell) => sum / counts[cell]);
  box.forEach((v, cell) => {
    mass += v;
    mx += v * (cell % boxWidth);
    my += v * Math.floor(cell / boxWidth);
  });
  // Shift so that the centre of mass lands on the image centre (pixel centres at +0.5).
  const dx = Math.round(SIDE / 2 - (mx / mass + 0.5));
  const dy = Math.round(SIDE / 2 - (my / mass + 0.5));
  const pixels = new Uint8Array(SIDE * SIDE);
  box.forEach((v, cell) => {
    const x = (cell % boxWidth) + dx;
    const y = Math.floor(cell / boxWidth) + dy;
    if (x >= 0 && x < SIDE && y >= 0 && y < SIDE) pixels[y * SIDE + x] = Math.round(v);
  });
  return pixels;
}
