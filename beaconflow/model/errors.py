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
``LedgerUnreadable``       a file of the ledger cannot be read      delivery.ledger_check
``TrackingError``          the client could not deliver             client
``TryLaterError``          nothing was done, try again later        (below)
``LedgerBusy``             another run holds the ledger's lock      delivery.ledger_lock
``InputNotLanded``         --date's day has no input yet            pipelines.options
``SpillError``             the spill pass of a chunked run failed   model.spillfile
``SpillFileError``         a spill file cannot be written or read   model.spillfile
``AppendError``            a file cannot be appended to             pipelines.appendfiles
=========================  =======================================  =====================

A :class:`TryLaterError` is not a failure of the run's configuration: nothing was done, and
the same command later may succeed (the command exits 75, sysexits' EX_TEMPFAIL).

Every error about a file names its path, what the file is and the system's reason, in the
words of :func:`io_problem`: ``dead letter not writable: /out/dead.jsonl: No space left on
device``.
"""

from __future__ import annotations


class BeaconflowError(Exception):
    """Something beaconflow found wrong and says so in words; never a bug."""


class TryLaterError(BeaconflowError):
    """Nothing was done, and the same command may succeed later (exit status 75)."""


def os_reason(error: BaseException) -> str:
    """The operating system's words for a failed file operation: ``No space left on device``.

    Beam's FileSystems wrap the OS's error: ``BeamIOError`` holds one per path in
    ``exception_details``, and its local filesystem raises ``IOError(err)`` around the
    original; the reason is dug out of both. An error that is not the OS's gives its own
    first line, or its type's name when it says nothing.
    """
    seen: set[int] = set()
    current = error
    while id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            return str(current.strerror)
        details = getattr(current, "exception_details", None)
        if isinstance(details, dict) and details:
            inner = next(iter(details.values()))
            if isinstance(inner, BaseException):
                current = inner
                continue
        if len(current.args) == 1 and isinstance(current.args[0], BaseException):
            current = current.args[0]
            continue
        break
    text = str(current).strip()
    return text.splitlines()[0] if text else type(current).__name__


def io_problem(what: str, path: str, error: BaseException, problem: str = "not writable") -> str:
    """One line naming a file that failed, what it is and why.

    ``dead letter not writable: /out/dead.jsonl: No space left on device``: ``what`` is the
    file's role as the user knows it ("dead letter", "ledger", "report.html"), ``problem``
    what went wrong ("not writable", "not readable").
    """
    return f"{what} {problem}: {path}: {os_reason(error)}"
