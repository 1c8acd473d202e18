"""Trust: who may control a node (signed requests), encrypted transport, isolated apps.

``keys`` (Ed25519 key files, fingerprints, signing), ``keyring`` (the keys a node authorizes,
kept in its storage), ``signatures`` (the node's check of a signed control request),
``curve`` (CurveZMQ on the node's sockets), ``sandbox`` and ``app_users`` (apps as users of
their own). ``docs/security.md`` tells the threat model.
"""
