"""GDPR use cases that span every store: erasure on request, retention limits and the register of
processing, with their commands. The primitives the shared transformations call on every record
(sealing, pseudonymization, the subject-key lookup) stay in ``core``: both layers run them, and
``privacy`` builds on them, never the reverse."""
