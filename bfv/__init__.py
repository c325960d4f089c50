"""v1 protocol: BFV scoring without evaluation keys, shared by the service and the client.

The cryptography lives here, apart from HTTP and storage, because both ends must agree on every
bit of it: the parameter sets (`params`), arithmetic on polynomials in RNS form (`ring`), the NTT
products SEAL does for us (`seal_ring`), the quantized model and its encodings (`plan`), the
client's keys and encryption (`encryption`), the server's evaluation (`evaluation`) and its
encryptions of zero made ahead (`rerandomize`), and the binary messages (`wire`). README's "v1 protocol"
section explains the design and its security.
"""
