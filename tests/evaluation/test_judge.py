"""LLM-judge win rate against a fake local OpenAI-compatible server with fixed verdicts."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from feddqc_flwr.evaluation.judge import judge_win_rate, parse_verdict
from feddqc_flwr.llm.openai_endpoint import ChatEndpoint

ROWS = [{"instruction": "Q1?", "input": "", "response": "ref one"},
        {"instruction": "Q2?", "input": "ctx", "response": "ref two"}]


class FakeJudge(BaseHTTPRequestHandler):
    replies: list[str] = []
    requests: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeJudge.requests.append(body)
        reply = FakeJudge.replies[len(FakeJudge.requests) - 1]
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def judge_url() -> Iterator[str]:
    FakeJudge.requests = []
    server = HTTPServer(("127.0.0.1", 0), FakeJudge)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()
    server.server_close()


def test_win_rate_counts_both_orders_ties_and_parse_failures(judge_url: str) -> None:
    # row 1: ours shown as A wins (1), swapped: tie (0.5); row 2: unparsable (failure), swapped: A = reference wins (0)
    FakeJudge.replies = ["Answer A is more precise. [[A]]", "[[TIE]]", "I cannot decide.", "[[A]]"]
    out, per_row = judge_win_rate(ChatEndpoint(judge_url, "judge"), ROWS, ["ours one", "ours two"])
    assert out == {"judge-win-rate": pytest.approx(1.5 / 3), "judge-verdicts": 3.0, "judge-failures": 1.0}
    assert per_row == [0.75, 0.0]  # row 1: (1 + 0.5) / 2; row 2: its one parsed verdict
    users = [r["messages"][1]["content"] for r in FakeJudge.requests]
    assert "[Answer A]\nours one" in users[0] and "[Answer B]\nref one" in users[0]
    assert "[Answer A]\nref one" in users[1] and "[Answer B]\nours one" in users[1]
    assert "Q2?\n\nctx" in users[2] and FakeJudge.requests[0]["model"] == "judge"


def test_unreachable_endpoint_counts_failures() -> None:
    out, per_row = judge_win_rate(ChatEndpoint("http://127.0.0.1:9/v1", "judge", timeout=2), ROWS[:1], ["x"])
    assert out["judge-failures"] == 2.0 and out["judge-verdicts"] == 0.0 and per_row == [None]
    assert out["judge-win-rate"] != out["judge-win-rate"]  # NaN


@pytest.mark.parametrize(("text", "verdict"), [("[[B]]", "B"), ("first [[A]] then [[tie]]", "TIE"), ("B.", "B"),
                                                ("Both are good", None)])
def test_parse_verdict(text: str, verdict: str | None) -> None:
    assert parse_verdict(text) == verdict
