// Swagger UI for this service's OpenAPI document, as FastAPI's own /docs page starts it, but from a
// file of this origin (the page's Content-Security-Policy allows no inline script).
/* global SwaggerUIBundle */
window.ui = SwaggerUIBundle({
  url: "/swagger.json",
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  // Swagger UI would otherwise show a badge loaded from its public validator, sending it this document's URL.
  validatorUrl: null,
});
