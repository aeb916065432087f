"""Start the project's commands in processes forked from one that has already imported torch.

A fresh `python train.py ...` spends 3-5 s importing torch, torchvision, accelerate and the package
before it reads its first argument. The tests start a few hundred such commands; here a server
process imports all of that once, and each command runs in a process forked from it:

    server ──fork──> waiter (one per command) ──fork──> the command

The command's process is a real one (its own pid, exit status, signals and file descriptors); it
runs the script or module as `python SCRIPT` or `python -m MODULE` would, with the request's argv,
environment, working folder and stdin/stdout/stderr (passed over a Unix socket), and exits as the
interpreter does as far as a command can see (exit_quickly). The waiter reports the command's pid,
then its wait status. What differs from a fresh interpreter is what the server read when it
started: the environment variables the interpreter and the preloaded libraries read at import
(STARTUP_VARIABLES); a request that sets them differently runs as a plain subprocess.

The server runs as `python tests/forkserver.py SOCKET_PATH`; the client half of this file (`forks`,
`run`, `start`) is what helpers.run and jobs.Background call.
"""

import atexit
import json
import locale
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import weakref
from pathlib import Path

# Read by the interpreter, OpenMP or tqdm when the server starts; a request must agree on them.
STARTUP_VARIABLES = ("PYTHONPATH", "PYTHONHOME", "PYTHONWARNINGS", "PYTHONUNBUFFERED", "PYTHONHASHSEED",
                     "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TQDM_DISABLE")  # fmt: skip
PRELOAD = ("torch", "torchvision", "accelerate", "numpy", "PIL.Image", "safetensors.torch", "yaml", "wandb",
           "torch_fidelity", "gan.train_loop", "gan.evaluate_command", "gan.checkpoint",
           "gan.data", "gan.prepared", "gan.samples", "gan.evaluation.runner")  # fmt: skip
MAX_REQUEST = 1 << 20


# --------------------------------------------------------------------------- the server


def preload() -> None:
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    # fork() copies only the calling thread: a thread started by an import would be missing in the children
    threads = len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else threading.active_count()
    if threads != 1:
        raise SystemExit(f"forkserver: the preloaded imports started {threads - 1} thread(s); fork would lose them")


def serve(path: str):
    """Accept requests until stdin closes; returns (request, fds) in a command's own process only."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the waiters are reaped by the kernel
    print("ready", flush=True)
    while True:
        readable, _, _ = select.select([listener, sys.stdin], [], [])
        if sys.stdin in readable:  # the client closed its end: the test session is over
            listener.close()
            atexit._run_exitfuncs()  # the finalizers of the temporary folders the imports made
            os._exit(0)
        conn, _ = listener.accept()
        if os.fork() == 0:
            listener.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            request = wait_on_command(conn)
            if request is not None:
                return request
            os._exit(0)
        conn.close()


def wait_on_command(conn: socket.socket):
    """In the waiter: fork the command; returns its request in the command's process, else None."""
    message, fds, _, _ = socket.recv_fds(conn, MAX_REQUEST, 3)
    request = json.loads(message)
    pid = os.fork()
    if pid == 0:
        conn.close()
        return request, fds
    for fd in fds:
        os.close(fd)
    conn.sendall(struct.pack("!q", pid))
    _, status = os.waitpid(pid, 0)
    conn.sendall(struct.pack("!q", status))
    conn.close()
    return None


def become(request: dict, fds: list) -> None:
    """Make this process the command's: its folder, environment, argv, sys.path and standard files."""
    forget_the_servers_exit_handlers()
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)


def forget_the_servers_exit_handlers() -> None:
    """What the preloaded imports made at exit stays the server's: wandb's temporary media folder is
    one folder for all commands, and the first command to exit would delete it. The standard
    library's own handlers (logging's flush, multiprocessing's clean-up) are registered again."""
    import logging
    import multiprocessing.util

    atexit._clear()
    for finalizer in list(weakref.finalize._registry):
        finalizer.atexit = False
    atexit.register(logging.shutdown)
    atexit.register(multiprocessing.util._exit_function)


def run_command(argv: list) -> None:
    """`python SCRIPT ARGS` or `python -m MODULE ARGS`, at the top level of this process."""
    import runpy

    if argv[0] == "-m":
        sys.modules.pop(argv[1], None)  # run afresh as __main__, as `python -m` does
        sys.argv = [argv[1], *argv[2:]]
        sys.path[0] = os.getcwd()
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        script = os.path.abspath(argv[0])
        sys.argv = list(argv)
        sys.path[0] = os.path.dirname(script)
        runpy.run_path(script, run_name="__main__")


def exit_quickly(code: int | None) -> None:
    """What the interpreter does at exit that a command can see, without tearing down every module
    (freeing torch's and wandb's one by one takes longer than most commands here): join the
    non-daemon threads, run the atexit handlers, flush the standard files. code None: die of SIGINT,
    as Python does after an unhandled KeyboardInterrupt.
    """
    threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    if code is None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(1 if code is None else code)


def exit_code(error: SystemExit) -> int:
    """The status `python` exits with for SystemExit(error.code): None is 0, other objects are printed, 1."""
    if error.code is None or isinstance(error.code, int):
        return error.code or 0
    print(error.code, file=sys.stderr)
    return 1


# --------------------------------------------------------------------------- the client

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = (ROOT / "train.py", ROOT / "evaluate.py")
ACCELERATE = str(Path(sys.executable).with_name("accelerate"))  # a Python script: the launcher's console entry


def forks(args: list, env: dict, cwd=ROOT) -> bool:
    """Is this one of the package's commands or `accelerate launch`, in an environment that agrees with
    the server's at start? (The processes the launcher starts are fresh interpreters.)"""
    if os.environ.get("GAN_TESTS_NO_FORKSERVER") or len(args) < 2:
        return False
    if args[0] == sys.executable:
        ours = Path(cwd, args[1]).resolve() in SCRIPTS or (args[1] == "-m" and len(args) > 2 and args[2].startswith("gan."))
    else:
        ours = args[0] == ACCELERATE and args[1] == "launch"
    started = server_env()
    return ours and all(env.get(name) == started.get(name) for name in STARTUP_VARIABLES)


class Forked:
    """A command started by the server: the parts of subprocess.Popen's interface the tests use."""

    def __init__(self, args: list, conn: socket.socket):
        self.args, self.conn, self.returncode = args, conn, None
        self.pid = receive_int(conn, None)

    def poll(self):
        if self.returncode is None:
            self.conn.setblocking(False)
            try:
                self._finish(receive_int(self.conn, 0))
            except BlockingIOError:
                pass
        return self.returncode

    def wait(self, timeout=None) -> int:
        if self.returncode is None:
            try:
                self._finish(receive_int(self.conn, timeout))
            except TimeoutError:
                raise subprocess.TimeoutExpired(self.args, timeout) from None
        return self.returncode

    def _finish(self, status: int) -> None:
        self.returncode = os.waitstatus_to_exitcode(status)
        self.conn.close()

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def receive_int(conn: socket.socket, timeout) -> int:
    conn.settimeout(timeout)
    data = b""
    while len(data) < 8:
        chunk = conn.recv(8 - len(data))
        if not chunk:
            raise RuntimeError("the fork server's waiter closed the connection")
        data += chunk
    return struct.unpack("!q", data)[0]


def start(args: list, env: dict, cwd, stdout: int, stderr: int) -> Forked:
    """Start a command that forks() accepts, with stdin from /dev/null."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(server().socket_path)
    argv = args[1:] if args[0] == sys.executable else args  # the script to run, then its arguments
    request = {"argv": argv, "env": env, "cwd": str(cwd)}
    with open(os.devnull, "rb") as stdin:
        socket.send_fds(conn, [json.dumps(request).encode()], [stdin.fileno(), stdout, stderr])
    return Forked(args, conn)


def run(args: list, env: dict, cwd, timeout: float) -> subprocess.CompletedProcess:
    """subprocess.run(args, capture_output=True, text=True, timeout=timeout), through the server."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = start(args, env, cwd, out.fileno(), err.fileno())
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(60)
            raise
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(args, proc.returncode, text(out.read()), text(err.read()))


def text(data: bytes) -> str:
    """As subprocess's text mode decodes: the locale's encoding, universal newlines."""
    return data.decode(locale.getpreferredencoding(False)).replace("\r\n", "\n").replace("\r", "\n")


def server_env() -> dict:
    """The environment the server starts with: the tests' usual one."""
    from helpers import base_env

    return base_env(ACCELERATE_USE_CPU="1")


_server = None
_server_lock = threading.Lock()


class Server:
    """This file run as the server, once per test process, until that process exits."""

    def __init__(self):
        self.folder = Path(tempfile.mkdtemp(prefix="gan-forkserver-"))
        self.socket_path = str(self.folder / "socket")
        with open(self.folder / "server.log", "w") as log:
            self.proc = subprocess.Popen([sys.executable, __file__, self.socket_path], cwd=ROOT, env=server_env(),
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)  # fmt: skip
        if self.proc.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"the fork server did not start:\n{(self.folder / 'server.log').read_text()[-3000:]}")
        atexit.register(self.close)

    def close(self) -> None:
        self.proc.stdin.close()  # the server exits when its stdin closes
        self.proc.wait(30)


def server() -> Server:
    global _server
    with _server_lock:
        if _server is None:
            _server = Server()
    return _server


if __name__ == "__main__":
    preload()
    request, fds = serve(sys.argv[1])
    become(request, fds)
    try:
        run_command(request["argv"])
    except SystemExit as error:
        exit_quickly(exit_code(error))
    except KeyboardInterrupt:  # the interpreter prints it, then dies of SIGINT
        sys.excepthook(*sys.exc_info())
        exit_quickly(None)
    except BaseException:  # noqa: BLE001 (printed as the interpreter prints an uncaught exception)
        sys.excepthook(*sys.exc_info())
        exit_quickly(1)
    exit_quickly(0)
