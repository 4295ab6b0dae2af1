"""Source shared by the kill-at-every-step child scripts of the store tests.

`KILLING` defines ``killing(real)``: it wraps a function so that the child
SIGKILLs itself at the ``kill_at``-th call of any wrapped function (counted
together in ``calls``); the script sets ``kill_at`` and ``calls = 0`` first.
"""

KILLING = """
def killing(real):
    def step(*args, **kwargs):
        global calls
        calls += 1
        if calls == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    return step
"""
