"""Parser, prompt, result cache and prefix rule of data.interests (fast, no model, no network)."""

from __future__ import annotations

import json

from config import load_config
from data.interests.cache import ResultCache
from data.interests.parse import parse_interests
from data.interests.prompt import EXAMPLE_INTERESTS, build_messages, item_line, prompt_key
from data.interests.runner import prefix_length, prompt_window

STAPLES = {
    "title": "Stanley TRA708T Sharpshooter Staples",
    "brand": "Stanley",
    "categories": ["Industrial & Scientific", "Fasteners", "Collated Fasteners", "Staples"],
    "description": "Heavy-duty staples for insulation and roofing felt.",
    "features": [],
}


def test_parse_tags_normalises_and_deduplicates() -> None:
    reply = (
        "Here you go:\n<interest> Woodworking  Clamps. </interest>\n"
        '<interest>woodworking clamps</interest>\n<interest>"Lab Glassware"</interest>\n'
        "<interest>Adhesives > Super Glue</interest>\n<interest>precision measuring</interest>\n"
        "<interest>3D printing</interest>\n<interest>one too many</interest>"
    )
    assert parse_interests(reply, 5) == [
        "woodworking clamps",
        "lab glassware",
        "super glue",
        "precision measuring",
        "3d printing",
    ]


def test_parse_unclosed_tags_end_at_line_end() -> None:
    reply = "<interest>soldering irons\n<interest>flux paste</interest>"
    assert parse_interests(reply, 5) == ["soldering irons", "flux paste"]


def test_parse_drops_stray_and_cut_off_tags() -> None:
    """A reply stopped by the token limit ends inside a closing tag (seen from SmolLM2)."""
    reply = "<interest>measure humidity</\n<interest>lab scales</item>\n<interest>glue <"
    assert parse_interests(reply, 5) == ["measure humidity", "lab scales", "glue"]
    assert parse_interests("<interest>Adhesives > Super Glue</interest>", 5) == ["super glue"]


def test_parse_numbered_and_bulleted_lists() -> None:
    numbered = "1. Soldering irons\n2) Flux paste;\n3. **Desoldering pumps**"
    bulleted = "Interests:\n- soldering irons\n* flux paste\n\u2022 desoldering pumps"
    expected = ["soldering irons", "flux paste", "desoldering pumps"]
    assert parse_interests(numbered, 5) == expected
    assert parse_interests(bulleted, 5) == expected


def test_parse_json_array() -> None:
    reply = 'Sure! ["Soldering irons", "flux paste", "Flux Paste", "desoldering pumps"]'
    assert parse_interests(reply, 5) == ["soldering irons", "flux paste", "desoldering pumps"]


def test_parse_junk_gives_nothing() -> None:
    assert parse_interests("", 5) == []
    assert parse_interests("Sorry, I cannot help with that request.", 5) == []
    assert parse_interests("<interest>  </interest><interest>123 456</interest>", 5) == []
    long = "<interest>" + " ".join(["word"] * 12) + "</interest>"
    assert parse_interests(long, 5) == []  # a copied title, not a phrase
    assert parse_interests("<interest>pack of</interest>", 5) == []  # cut off mid-phrase
    assert parse_interests("<interest>on electrical tape</interest>", 5) == []
    assert parse_interests('["a", 3]', 5) == []  # not an array of strings, not a list


def test_parse_rejects_echo_of_the_example() -> None:
    reply = "\n".join(f"<interest>{p}</interest>" for p in EXAMPLE_INTERESTS)
    assert parse_interests(reply, 5, frozenset(EXAMPLE_INTERESTS)) == []


def test_prompt_keeps_most_recent_items_within_budget() -> None:
    items = [dict(STAPLES, title=f"Product number {i}") for i in range(30)]
    messages = build_messages(items, num_interests=5, max_prompt_tokens=60, max_items=20)
    asked = messages[-1]["content"]
    lines = [line for line in asked.splitlines() if line.startswith("- ")]
    assert 0 < len(lines) < 20
    assert sum(len(line.split()) for line in lines) <= 60
    titles = [line.split(" (")[0][2:] for line in lines]
    expected = [f"Product number {i}" for i in range(30 - len(lines), 30)]
    assert titles == expected  # the newest items, oldest first
    assert "exactly 5" in messages[0]["content"] and "<interest>" in messages[0]["content"]
    assert asked.endswith("List 5 interests.")


def test_prompt_item_cap_and_single_long_item() -> None:
    items = [dict(STAPLES, title=f"Item {i}") for i in range(10)]
    asked = build_messages(items, 5, 10_000, max_items=3)[-1]["content"]
    assert [line[2:8] for line in asked.splitlines() if line.startswith("- ")] == [
        "Item 7",
        "Item 8",
        "Item 9",
    ]
    huge = dict(STAPLES, title="word " * 500)
    block = build_messages([huge], 5, 50, 20)[-1]["content"].splitlines()[1]
    assert len(block.split()) == 50  # one over-budget item is cut, not dropped
    assert build_messages([{}], 5, 100, 20) == []  # nothing to describe


def test_item_line_uses_specific_categories_and_detail() -> None:
    line = item_line(STAPLES)
    assert line.startswith("- Stanley TRA708T Sharpshooter Staples (Collated Fasteners > Staples)")
    assert "Heavy-duty staples" in line
    assert "Industrial & Scientific" not in line


def test_prompt_key_depends_on_backend_model_and_text() -> None:
    messages = build_messages([STAPLES], 5, 100, 20)
    key = prompt_key("dashscope", "qwen-plus", messages)
    assert key == prompt_key("dashscope", "qwen-plus", json.loads(json.dumps(messages)))
    assert key != prompt_key("dashscope", "qwen-max", messages)
    assert key != prompt_key("local", "qwen-plus", messages)
    assert key != prompt_key("dashscope", "qwen-plus", build_messages([STAPLES] * 2, 5, 100, 20))


def test_cache_tolerates_torn_line_and_retries_failures(tmp_path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text(
        '{"key": "a", "phrases": ["x"]}\n{"key": "b", "error": "boom"}\n{"key": "c", "ph'
    )
    cache = ResultCache(path)
    assert cache.done == {"a": ["x"]} and cache.failed == {"b"} and cache.torn == 1
    cache.add_success("d", ["y", "z"])
    cache.add_failure("e", "timeout")
    cache.close()
    lines = path.read_text().splitlines()
    assert lines[-2:] == ['{"key": "d", "phrases": ["y", "z"]}', '{"key": "e", "error": "timeout"}']
    again = ResultCache(path)
    again.add_success("b", ["w"])  # a failure is retried on the next run, then finished
    again.close()
    final = ResultCache(path)
    final.close()
    assert final.done == {"a": ["x"], "d": ["y", "z"], "b": ["w"]}
    assert final.failed == {"e"} and final.torn == 1


def test_prefix_rule() -> None:
    assert [prefix_length(n, 1) for n in range(6)] == [0, 1, 2, 3, 4, 5]
    assert [prefix_length(n, 3) for n in range(1, 9)] == [1, 1, 1, 4, 4, 4, 7, 7]
    history = [str(i) for i in range(10)]
    assert prompt_window(history, 3, 20) == tuple(history[:10])  # 10 = 1 + 3 * 3
    assert prompt_window(history[:9], 3, 20) == tuple(history[:7])
    assert prompt_window(history[:9], 3, 4) == ("3", "4", "5", "6")
    assert prompt_window([], 3, 20) == ()


def test_config_has_every_key_the_package_reads() -> None:
    icfg = load_config("data_process").interests
    for key in (
        "backend stride num_interests max_prompt_tokens max_items model concurrency timeout_s "
        "max_retries backoff_s local_batch_size local_max_new_tokens cache_dir"
    ).split():
        assert key in icfg, key
