"""The ``userpulse`` commands, one module each, in the order a user meets them: ``stack`` (and ``demo``),
``produce``, ``speed``, ``batch``, ``dashboard``, ``views``, ``profile``, the operator's commands
(``operations``: topics, lag, batches, runs, messages, dead letters), ``forget``, ``retention``,
``register`` and ``settings``. Each parses and checks its arguments, calls the layer that does the work
and prints the result; ``userpulse.cli`` puts them together."""
