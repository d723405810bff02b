"""The wire format (saas/nlp/wire.py): messages survive the trip, and the parent's framing is
multiprocessing.Connection's, in both directions."""

import socket
from multiprocessing.connection import Connection

from saas.nlp import wire

REQUESTS = wire.Requests(
    [
        wire.TextRequest(1, "en_core_web_sm", "entities", "Paris.", {"searched_entity": "GPE"}),
        wire.TextRequest(2, "fr_core_news_sm", "tokens", "Bonjour 🎉", None),
    ]
)
RESULTS = wire.Results(
    [wire.TextResult(1, True, b'{"entities":[]}'), wire.TextResult(2, False, "E")]
)
READY = wire.Ready({"en_core_web_sm": {"name": "en_core_web_sm", "pipeline": ["ner"]}})


def test_messages_round_trip() -> None:
    assert wire.decode_requests(wire.encode(REQUESTS)) == REQUESTS
    assert wire.decode_child_message(wire.encode(RESULTS)) == RESULTS
    assert wire.decode_child_message(wire.encode(READY)) == READY


def test_a_frame_is_what_connection_recv_bytes_reads() -> None:
    raw, other = socket.socketpair()
    with raw, Connection(other.detach()) as conn:
        raw.sendall(wire.frame(wire.encode(REQUESTS)))
        assert wire.decode_requests(conn.recv_bytes()) == REQUESTS


def test_frame_protocol_splits_what_connection_send_bytes_wrote() -> None:
    raw, other = socket.socketpair()
    with raw:
        with Connection(other.detach()) as conn:
            for message in (READY, RESULTS, RESULTS):
                conn.send_bytes(wire.encode(message))
        stream = b"".join(iter(lambda: raw.recv(65536), b""))
    received: list[bytes] = []
    protocol = wire.FrameProtocol(received.append, lambda: None)
    for i in range(len(stream)):  # a byte at a time: frames split anywhere
        protocol.data_received(stream[i : i + 1])
    assert [wire.decode_child_message(m) for m in received] == [READY, RESULTS, RESULTS]
    assert not protocol.buffer
