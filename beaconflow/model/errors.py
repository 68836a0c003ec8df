"""The one root of every error beaconflow raises on purpose, and the two kinds below it.

Catch :class:`BeaconflowError` to handle anything beaconflow says is wrong, and let every
other exception through as a bug. Below it, each layer names its own errors (a usage error,
an input that cannot be read, a record or a message that breaks a rule, a mapping file that
is wrong, a ledger that cannot be written, a message the client could not deliver); most
also derive from the built-in exception they always were (``ValueError``, ``OSError``), so
code that caught those still does.

=========================  =======================================  =====================
error                      raised when                              where
=========================  =======================================  =====================
``UsageError``             a flag, a file or a pattern is unusable  pipelines.options
``InputError``             an --input pattern matches nothing        transforms.read
``RecordError``            a record breaks the canonical record     model.records
``MessageError``           a message breaks its service's rules     model.message
``MappingError``           a mapping file is wrong                  model.mapping
``LedgerError``            the ledger cannot be written             delivery.ledger
``TrackingError``          the client could not deliver             client
``TryLaterError``          nothing was done, try again later        (below)
``LedgerBusy``             another run holds the ledger's lock      delivery.ledger_lock
``InputNotLanded``         --date's day has no input yet            pipelines.options
=========================  =======================================  =====================

A :class:`TryLaterError` is not a failure of the run's configuration: nothing was done, and
the same command later may succeed (the command exits 75, sysexits' EX_TEMPFAIL).
"""

from __future__ import annotations


class BeaconflowError(Exception):
    """Something beaconflow found wrong and says so in words; never a bug."""


class TryLaterError(BeaconflowError):
    """Nothing was done, and the same command may succeed later (exit status 75)."""
