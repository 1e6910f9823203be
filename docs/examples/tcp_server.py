"""
The classic blocking-socket greeting server that hellotcp replaces, as the
material it grew from has it: one connection at a time, one ``recv(1024)``,
the greeting, ``close()``.

Two changes, so that the tutorial can run it beside ``twist hellotcp``: the
port may be given as an argument (default 5000), and SIGTERM ends it with
exit status 0.
"""

import signal
import socket
import sys


def main() -> None:
    server_socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    server_address = ("localhost", port)
    server_socket.bind(server_address)
    server_socket.listen(1)

    print(f"Server is listening on port {port}...", flush=True)

    while True:
        client_socket, client_address = server_socket.accept()
        print(f"Accepted connection from {client_address}", flush=True)

        data = client_socket.recv(1024)
        print(f"Received data: {data.decode()}", flush=True)

        response = b"Hello, client!"
        client_socket.send(response)
        print(f"Sent response: {response!r}", flush=True)

        client_socket.close()


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    main()
