"""The DashScope backend: the real SDK against tests/fake_dashscope.py on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_dashscope import GENERATION_PATH, default_reply

from config import load_config
from data.interests import InterestError, annotate_rows, make_extractor
from data.interests.cache import ResultCache
from data.interests.prompt import item_line, prompt_chars, prompt_key
from data.paths import REPO_ROOT
from data.splits import load_items, load_split

SECRET = "sk-test-SECRET-0123456789"
CACHE_FILE = "dashscope-qwen-plus.jsonl"


def icfg(**overrides: object):
    cfg = load_config("data_process").interests
    cfg.update(backend="dashscope", recipe="history", backoff_s=0.01, timeout_s=5.0)
    cfg.update(max_retries=2)
    cfg.update(overrides)
    return cfg


@pytest.fixture(scope="module")
def data(scientific18_dir: Path) -> tuple[list[dict], dict[str, dict]]:
    return load_split(scientific18_dir, "scientific18", "test"), load_items(
        scientific18_dir, "scientific18"
    )


@pytest.fixture
def server(dashscope_server):
    return dashscope_server


def expected(messages: list[dict]) -> list[str]:
    return [line[10:-11] for line in default_reply(messages).splitlines()]


def test_success_wire_format_prompts_and_cache(server, data, tmp_path: Path, capsys) -> None:
    rows, items = data[0][:8] + data[0][:1], data[1]  # the repeated row shares its prompt
    srv = server()
    interests, summary = annotate_rows(rows, items, icfg(), tmp_path, show_progress=False)
    assert "-> 8 LLM calls to make" in capsys.readouterr().out  # announced before calling
    assert summary["calls_needed"] == summary["succeeded"] == len(srv.requests) == 8
    assert summary["failed"] == summary["retries"] == summary["cached"] == 0
    assert interests[8] == interests[0]
    by_tag = {hashlib.sha1(p[-1]["content"].encode()).hexdigest()[:8]: p for p in srv.prompts()}
    for request in srv.requests:
        assert request["path"] == GENERATION_PATH
        assert request["authorization"] == "Bearer test-key"
        assert request["body"]["model"] == "qwen-plus"
        assert request["body"]["parameters"]["result_format"] == "message"
        roles = [m["role"] for m in request["body"]["input"]["messages"]]
        assert roles == ["system", "user", "assistant", "user"]
    for row, found in zip(rows, interests, strict=True):
        prompt = by_tag[found[0].split()[1]]  # "topic <tag> number 1" names the prompt
        assert found == expected(prompt)
        asked = [ln for ln in prompt[-1]["content"].splitlines() if ln.startswith("- ")]
        assert asked == [item_line(items[t]) for t in row["inter_history"][-20:]]
        target = item_line(items[row["target_id"]])
        if target not in {item_line(items[t]) for t in row["inter_history"]}:
            assert target not in prompt[-1]["content"]  # the prompt never sees the target
    again, summary2 = annotate_rows(rows, items, icfg(), tmp_path, show_progress=False)
    assert again == interests and len(srv.requests) == 8  # all from the cache
    assert summary2["cached"] == 8 and summary2["calls_needed"] == 0


def test_cache_only_makes_no_call_and_counts_the_rest(server, data, tmp_path: Path) -> None:
    """A partial cache (say, from a GPU run that ran out of time) is used as it is."""
    rows, items = data[0][:6], data[1]
    srv = server()
    first, _ = annotate_rows(rows[:3], items, icfg(), tmp_path, show_progress=False)
    assert len(srv.requests) == 3
    found, summary = annotate_rows(
        rows, items, icfg(cache_only=True), tmp_path, show_progress=False
    )
    assert len(srv.requests) == 3  # nothing asked
    assert found[:3] == first and found[3:] == [[], [], []]
    assert summary["cached"] == 3 and summary["not_computed"] == 3
    assert summary["calls_needed"] == 0 and summary["rows_without_interests"] == 3


def test_shards_share_one_cache_and_split_the_prompts(server, data, tmp_path: Path) -> None:
    """Processes with shards=2 ask disjoint halves; together they fill the cache once."""
    rows, items = data[0][:10], data[1]
    srv = server()
    asked, left = [], []
    for index in (0, 1):
        _, summary = annotate_rows(
            rows, items, icfg(shard=index, shards=2), tmp_path, show_progress=False
        )
        asked.append({json.dumps(p) for p in srv.prompts()} - set().union(*asked))
        assert summary["succeeded"] == len(asked[-1])
        left.append(summary["not_computed"])
    assert asked[0] and asked[1] and not asked[0] & asked[1]
    assert left == [len(asked[1]), 0]  # the first shard left the second one's prompts
    assert len(srv.requests) == 10
    found, summary = annotate_rows(rows, items, icfg(cache_only=True), tmp_path, False)
    assert all(found) and summary["cached"] == 10 and summary["not_computed"] == 0
    with pytest.raises(InterestError, match="shard"):
        annotate_rows(rows, items, icfg(shard=2, shards=2), tmp_path, show_progress=False)


def test_concurrency_is_bounded(server, data, tmp_path: Path) -> None:
    rows, items = data[0][:9], data[1]
    srv = server(delay_s=0.2)
    interests, summary = annotate_rows(
        rows, items, icfg(concurrency=3), tmp_path, show_progress=False
    )
    assert all(interests) and summary["succeeded"] == 9
    assert srv.max_in_flight == 3


def test_prompts_are_asked_shortest_first(server, data, tmp_path: Path) -> None:
    """A batched backend pads to the longest prompt of a batch: similar lengths waste little."""
    rows, items = data[0][:12], data[1]
    srv = server()
    annotate_rows(rows, items, icfg(concurrency=1), tmp_path, show_progress=False)
    sizes = [prompt_chars(p) for p in srv.prompts()]
    assert len(sizes) > 3 and len(set(sizes)) > 1  # distinct lengths: the order means something
    assert sizes == sorted(sizes)


def test_throttled_then_success(server, data, tmp_path: Path) -> None:
    rows, items = data[0][:1], data[1]
    srv = server("429")
    interests, summary = annotate_rows(rows, items, icfg(), tmp_path, show_progress=False)
    assert [r["behaviour"] for r in srv.requests] == ["429", "ok"]
    assert summary["retries"] == 1 and summary["succeeded"] == 1
    assert interests == [expected(srv.prompts()[-1])]


def test_server_error_retried_then_counted_then_retried_next_run(
    server, data, tmp_path: Path
) -> None:
    rows, items = data[0][:1], data[1]
    srv = server("500", "500", "500")
    interests, summary = annotate_rows(rows, items, icfg(), tmp_path, show_progress=False)
    assert len(srv.requests) == 3  # one try and max_retries=2 retries
    assert interests == [[]]
    assert summary["failed"] == 1 and summary["retries"] == 2
    assert summary["rows_without_interests"] == 1
    assert "500 InternalError" in summary["example_errors"][0]
    record = json.loads((tmp_path / CACHE_FILE).read_text().splitlines()[-1])
    assert "500" in record["error"] and "phrases" not in record
    interests, summary = annotate_rows(rows, items, icfg(), tmp_path, show_progress=False)
    assert summary["calls_needed"] == 1 and summary["succeeded"] == 1  # failure not finished
    assert interests == [expected(srv.prompts()[-1])]


def test_timeout_is_retried_then_fails(server) -> None:
    history = [{"title": "Digital Caliper", "categories": ["Root", "Calipers"]}]
    srv = server("slow", slow_s=3.0)

    async def run(cfg) -> list[str]:
        ext = make_extractor(cfg)
        try:
            return await ext.extract(history)
        finally:
            await ext.aclose()

    start = time.perf_counter()
    found = asyncio.run(run(icfg(timeout_s=0.3)))
    assert found == expected(srv.prompts()[-1])
    assert [r["behaviour"] for r in srv.requests] == ["slow", "ok"]
    srv.behaviours.extend(["slow", "slow"])
    with pytest.raises(InterestError, match="no reply within 0.3s"):
        asyncio.run(run(icfg(timeout_s=0.3, max_retries=1)))
    assert time.perf_counter() - start < 3.0  # never waited for a slow reply


def test_malformed_reply_retried_then_failure(server, data, tmp_path: Path) -> None:
    rows, items = data[0][:1], data[1]
    srv = server("malformed", "malformed", "malformed")
    interests, summary = annotate_rows(rows, items, icfg(), tmp_path, show_progress=False)
    assert len(srv.requests) == 3 and interests == [[]]
    assert summary["failed"] == 1 and summary["retries"] == 2
    assert "0 of 5 phrases" in summary["example_errors"][0]
    srv.behaviours.append("malformed")
    interests, summary = annotate_rows(rows, items, icfg(), tmp_path, show_progress=False)
    assert summary["retries"] == 1 and interests == [expected(srv.prompts()[-1])]


def test_rejected_key_stops_without_retry(server, data, tmp_path: Path, monkeypatch) -> None:
    rows, items = data[0][:5], data[1]
    srv = server("401", default="401")
    monkeypatch.setenv("DASHSCOPE_API_KEY", SECRET)
    with pytest.raises(InterestError, match="rejected the API key") as err:
        annotate_rows(rows, items, icfg(concurrency=1), tmp_path, show_progress=False)
    assert SECRET not in str(err.value)
    assert len(srv.requests) == 1  # no retry, no other prompt tried
    assert srv.requests[0]["authorization"] == f"Bearer {SECRET}"

    async def single() -> None:
        ext = make_extractor(icfg())
        try:
            await ext.extract([items[rows[0]["inter_history"][0]]])
        finally:
            await ext.aclose()

    srv.default = "ok"  # the fake now checks the key itself: a wrong one is a 401
    with pytest.raises(InterestError, match="rejected the API key") as err:
        asyncio.run(single())
    assert SECRET not in str(err.value) and len(srv.requests) == 2


def test_missing_key_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.delenv("DASHSCOPE_API_KEY", raising=False)
    with pytest.raises(InterestError, match="DASHSCOPE_API_KEY"):
        make_extractor(icfg())


CHILD = """
import json, sys
from pathlib import Path
from config import load_config
from data.interests import annotate_rows
from data.splits import load_items, load_split
data, cache, out = map(Path, sys.argv[1:4])
rows = load_split(data, "scientific18", "test")[:40]
cfg = load_config("data_process").interests
cfg.update(backend="dashscope", recipe="history", concurrency=2, backoff_s=0.01)
found, summary = annotate_rows(rows, load_items(data, "scientific18"), cfg, cache, False)
out.write_text(json.dumps({"interests": found, "summary": summary}))
"""


def test_sigkill_then_rerun_repeats_no_finished_prompt(
    server, scientific18_dir: Path, tmp_path: Path
) -> None:
    srv = server(delay_s=0.15)
    cache_file = tmp_path / "cache" / CACHE_FILE
    out = tmp_path / "out.json"
    args = [sys.executable, "-c", CHILD, str(scientific18_dir), str(tmp_path / "cache"), str(out)]
    child = subprocess.Popen(args, cwd=REPO_ROOT)
    deadline = time.monotonic() + 60
    while not (cache_file.exists() and cache_file.read_bytes().count(b"\n") >= 8):
        assert child.poll() is None and time.monotonic() < deadline, "child ended too early"
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL
    assert not out.exists()
    killed = ResultCache(cache_file)
    killed.close()
    finished = set(killed.done)
    assert len(finished) >= 8
    before = len(srv.requests)

    subprocess.run(args, cwd=REPO_ROOT, check=True, timeout=300)
    result = json.loads(out.read_text())
    rerun = [prompt_key("dashscope", "qwen-plus", p) for p in srv.prompts()[before:]]
    assert not finished & set(rerun)  # zero repeated calls for finished prompts
    assert len(rerun) == len(set(rerun)) == result["summary"]["calls_needed"]
    assert result["summary"]["cached"] == len(finished)
    assert len(result["interests"]) == 40 and all(result["interests"])
    total = result["summary"]["cached"] + result["summary"]["calls_needed"]
    assert len(finished) < total <= 40  # it was killed mid-run
