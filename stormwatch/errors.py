"""Errors a user can fix; the CLI prints them as one line instead of a traceback."""


class UserError(Exception):
    """Something the user asked for cannot be done; the message says how to fix it."""


class KafkaUnavailable(UserError):
    """Kafka did not answer in time (brokers down, a leader election, a moving coordinator).

    A one-shot command reports it like any other user error; a long-running worker waits it out
    and tries again, because the same request succeeds once the brokers are back.
    """
