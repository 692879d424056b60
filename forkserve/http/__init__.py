"""HTTP/1.x protocol logic with no I/O: bytes in, requests and response heads out.

Nothing in this package touches a socket, so every rule can be tested by
feeding bytes in any split. It imports only the standard library.
"""
