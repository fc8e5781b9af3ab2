"""Lets multiprocessing pass rsock sockets to other processes, as it passes the stdlib's.

multiprocessing.reduction registers a reducer for the stdlib's socket class only: it duplicates the
descriptor for the receiving process, which rebuilds a socket around it. rsock registers the same for
its own class whenever that module is loaded (reloads included), without importing it here
(multiprocessing would add a few milliseconds to every ``import rsock``): a finder on ``sys.meta_path``
gives the module a loader that registers the reducer after running it. The finder stays in place once
added: the import system walks that list while other threads import, and taking an entry off would make
such a walk skip the one after it. The finder and loader are plain classes, as the import system takes
them: importlib.abc's bases would cost ``import rsock`` 10 ms more (it imports typing, tempfile and more).
"""

import sys

_REDUCTION = "multiprocessing.reduction"


def _reduce_socket(sock):
    from multiprocessing.reduction import DupFd

    return _rebuild_socket, (DupFd(sock.fileno()), sock.family, sock.type, sock.proto)


def _rebuild_socket(dup, family, type, proto):
    from rsock.sockets import socket

    return socket(family, type, proto, fileno=dup.detach())


def _register(reduction):
    from rsock.sockets import socket

    reduction.register(socket, _reduce_socket)


class _RegisteringLoader:
    """multiprocessing.reduction's own loader, which then registers rsock's reducer with the module."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        # Through this module's copy in sys.modules: after rsock was imported again, this loader may be an earlier
        # copy's, whose reducer pickle would not find under its name.
        sys.modules[__name__]._register(module)

    def __getattr__(self, name):
        # get_source(), get_filename() and the rest, for inspect and linecache. Looked up in the instance's
        # own dict: copy and pickle ask for attributes before `_loader` is set.
        loader = vars(self).get("_loader")
        if loader is None:
            raise AttributeError(name)
        return getattr(loader, name)


class _ReductionFinder:
    """Finds multiprocessing.reduction with the finders after it, and gives it a registering loader."""

    def find_spec(self, fullname, path, target=None):
        if fullname != _REDUCTION:
            return None
        for finder in sys.meta_path:
            find_spec = getattr(finder, "find_spec", None)
            # Skips itself, and a copy of itself from an earlier import of this module (a reload, or rsock imported
            # again once taken out of sys.modules): two would ask each other for the module without end.
            if _is_reduction_finder(finder) or find_spec is None:
                continue
            spec = find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _RegisteringLoader(spec.loader)
                return spec
        return None


def install():
    """Registers rsock's socket reducer now if multiprocessing is loaded, and whenever it is (re)loaded."""
    # One finder, whatever the imports of this module: a copy from an earlier one is of another class object, and
    # serves as well (it registers the reducer of the module's copy in sys.modules).
    if not any(_is_reduction_finder(finder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _ReductionFinder())
    reduction = sys.modules.get(_REDUCTION)
    if reduction is not None:
        _register(reduction)


def _is_reduction_finder(finder):
    kind = type(finder)
    return (kind.__module__, kind.__qualname__) == (__name__, _ReductionFinder.__qualname__)
