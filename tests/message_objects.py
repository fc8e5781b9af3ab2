"""What the handlers of rsock's servers see of the bytes objects they are given: rsock refills one object for the next
message once a handler let go of it, and every message must still look brand new."""

import os

# Sizes that have one object refilled with shorter and longer contents in turn.
SIZES = [1500, 1200, 3000, 2, 1100, 2999, 64, 1500] * 3


def messages():
    """Messages of SIZES, each different, none holding a NUL (so os.stat() takes them as paths)."""
    return [bytes((seed * 7 + i) % 250 + 1 for i in range(size)) for seed, size in enumerate(SIZES)]


def summary(message):
    """What `Watcher.look` answers for an intact `message`."""
    return b"1 %d %d" % (len(message), hash(message))


class Watcher:
    """Looks at each message a handler is given as a handler might: keeps every third, a memoryview of every fifth,
    and hashes each one (a refilled object with the last contents' cached hash would answer wrongly). os.stat()
    rejects a path whose C string runs past its length, as one would without its terminating NUL."""

    def __init__(self):
        self.seen, self.kept, self.views = [], [], []

    def look(self, data):
        index = len(self.seen)
        self.seen.append(bytearray(data))  # a copy: bytes(data) would be the object itself
        if index % 3 == 0:
            self.kept.append(data)
        if index % 5 == 0:
            self.views.append(memoryview(data))
        try:
            os.stat(data)
        except ValueError:
            return b"no NUL"
        except OSError:
            pass
        return b"%d %d %d" % (type(data) is bytes, len(data), hash(data))

    def saw(self, sent):
        """Whether the handler saw exactly `sent`, and what it kept is still as it came."""
        return self.seen == sent and self.kept == sent[::3] and [bytes(view) for view in self.views] == sent[::5]
