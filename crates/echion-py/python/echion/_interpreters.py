"""Which interpreter of the process this is, without loading echion.core
(which a subinterpreter may not be able to load)."""


def is_main_interpreter() -> bool:
    """Whether this is the process's main interpreter, not a subinterpreter."""
    try:
        import _xxsubinterpreters as interpreters
    except ImportError:
        try:
            import _interpreters as interpreters  # 3.13
        except ImportError:
            return True
    current, main = interpreters.get_current(), interpreters.get_main()
    # 3.13 answers (id, whence) pairs; earlier versions InterpreterID objects.
    if isinstance(current, tuple):
        current, main = current[0], main[0]
    return int(current) == int(main)
