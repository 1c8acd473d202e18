"""The hello app: an echo, a streaming handler and a handler that raises."""


def echo(request):
    """Answer with the request's body."""
    return request.data


def count(request):
    """Stream the numbers 1 to N (N is the body, default 3), one chunk each."""
    n = int(request.data or 3)
    for i in range(1, n + 1):
        yield f"{i}\n"


def fail(request):
    """Raise, to show what a failing handler answers (502 with the message)."""
    raise ValueError("this handler always fails")
