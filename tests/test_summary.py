"""microscale.summary: the summary's markdown links the results where a browser opens them."""

from __future__ import annotations

from pathlib import Path

from microscale.summary import result_link, summary_markdown

SUMMARY = {
    "n_images": 10,
    "stress": {"cnn": {1: 0.3, 2: 0.06, 3: 0.01}},
    "r2_dim": 3,
    "r2": {"cnn": {"theta": 0.9, "k": 0.8}},
}


def _files(store: Path) -> list[Path]:
    return [store / "results" / n for n in ("map.nc", "map.png", "map.html")]


def test_links_over_http_with_results_url(tmp_path):
    store = tmp_path / "st ore"
    summary = {**SUMMARY, "interactive_map": str(store / "results" / "map.html")}
    text = summary_markdown(
        summary, _files(store), results_url="http://127.0.0.1:8000/", store=store
    )
    assert "[Open map.html](http://127.0.0.1:8000/results/map.html)" in text
    assert "![the map](http://127.0.0.1:8000/results/map.png)" in text
    assert "[map.nc](http://127.0.0.1:8000/results/map.nc)" in text
    assert "file://" not in text
    assert "R^2 of linear maps to the ground truth at D*=3" in text and "theta 0.9" in text


def test_without_results_url_says_how_to_serve(tmp_path):
    summary = {**SUMMARY, "interactive_map": str(tmp_path / "results" / "map.html")}
    text = summary_markdown(summary, _files(tmp_path))
    assert "microscale serve --store" in text and "![" not in text


def test_result_link_outside_the_store_is_a_file_uri(tmp_path):
    link = result_link(tmp_path / "x.png", results_url="http://h/", store=tmp_path / "s")
    assert link.startswith("file://")
    link = result_link(
        tmp_path / "s" / "results" / "a b.png", results_url="http://h/", store=tmp_path / "s"
    )
    assert link == "http://h/results/a%20b.png"
