"""Captures request frames real Kafka clients send, for the golden decoder tests and the fuzz
corpus. A proxy between the client and a running Strom (started with
kafka.advertised_addr = 127.0.0.1:LISTEN_PORT, so the client stays on the proxy) writes the
first frame of each API and version to OUTDIR/<client>-<api key>-v<version>.bin (the frame
without its 4-byte length).

Usage: capture.py LISTEN_PORT BROKER_ADDR OUTDIR CLIENT_NAME   (runs until killed)
"""
import os
import socket
import struct
import sys
import threading

port, broker, outdir, client_name = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
host, broker_port = broker.rsplit(":", 1)
os.makedirs(outdir, exist_ok=True)
lock = threading.Lock()


def read_frame(sock):
    data = b""
    while len(data) < 4:
        chunk = sock.recv(4 - len(data))
        if not chunk:
            return None
        data += chunk
    (length,) = struct.unpack(">i", data)
    body = b""
    while len(body) < length:
        chunk = sock.recv(length - len(body))
        if not chunk:
            return None
        body += chunk
    return data + body


def forward(source, target, capture):
    try:
        while (frame := read_frame(source)) is not None:
            if capture:
                api_key, version = struct.unpack(">hh", frame[4:8])
                path = os.path.join(outdir, f"{client_name}-{api_key}-v{version}.bin")
                with lock:
                    if not os.path.exists(path):
                        with open(path, "wb") as f:
                            f.write(frame[4:])
            target.sendall(frame)
    except OSError:
        pass
    for s in (source, target):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", port))
listener.listen(16)
while True:
    client, _ = listener.accept()
    upstream = socket.create_connection((host, int(broker_port)))
    threading.Thread(target=forward, args=(client, upstream, True), daemon=True).start()
    threading.Thread(target=forward, args=(upstream, client, False), daemon=True).start()
