"""The one :class:`~streamsafe.transparency.compute.TransparencyReport` written as JSON,
CSV or a self-contained HTML page (charts drawn by matplotlib as SVG and inlined as data
URIs: nothing is fetched when the page is viewed).

Every figure in the page's tables carries ``data-figure="<section>/<path>"`` (the
figure's path in the JSON), and the whole JSON is embedded in
``<script type="application/json" id="transparency-data">``, so a reader or a test can
check the page against ``--json``."""

from __future__ import annotations

import base64
import csv
import html
import io
from collections.abc import Iterator, Mapping
from typing import Any

import orjson

from streamsafe.transparency.compute import SECTIONS, TransparencyReport

__all__ = ["figure_text", "flatten", "to_csv", "to_html", "to_json"]


def to_json(report: TransparencyReport) -> str:
    return orjson.dumps(report.as_record(), option=orjson.OPT_INDENT_2).decode()


def flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(path, leaf)`` pairs of a JSON value; paths join keys with ``/``."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from flatten(item, f"{prefix}/{key}" if prefix else str(key))
    else:
        yield prefix, value


def to_csv(report: TransparencyReport) -> str:
    """One row per figure: section, figure (its path in the JSON below the section), value."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["section", "figure", "value"])
    record = report.as_record()
    for section in SECTIONS:
        for path, value in flatten(record[section]):
            writer.writerow([section, path, "" if value is None else value])
    return out.getvalue()


def figure_text(path: str, value: Any) -> str:
    """How the page shows a figure: rates as percentages, times in seconds, n/a for none."""
    if value is None:
        return "n/a"
    if isinstance(value, str):
        return value
    if path.endswith("_rate"):
        return f"{value * 100:.2f}%"
    if path.startswith("time_to_action_ms/") and not path.endswith("/count"):
        return f"{value / 1000:.3f} s"
    return str(value)


_NONE = '<td class="num">&ndash;</td>'  # no such figure in the data


def _cell(path: str, value: Any) -> str:
    return f'<td class="num" data-figure="{html.escape(path)}">{html.escape(figure_text(path, value))}</td>'


def _table(title: str, headers: list[str], rows: list[list[str]], note: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(row) + "</tr>" for row in rows) or \
        f'<tr><td colspan="{len(headers)}" class="empty">none in this period</td></tr>'
    caption = f"<p class=note>{html.escape(note)}</p>" if note else ""
    return f"<section><h2>{html.escape(title)}</h2>{caption}<table><tr>{head}</tr>{body}</table></section>"


def _name(text: str) -> str:
    return f"<th scope=row>{html.escape(text)}</th>"


def _tables(r: dict[str, Any]) -> str:
    actions = r["actions"]
    categories = sorted({c for per in actions["by_type_and_category"].values() for c in per})
    action_rows = []
    for action, total in actions["by_type"].items():
        per = actions["by_type_and_category"].get(action, {})
        action_rows.append([_name(action), _cell(f"actions/by_type/{action}", total),
                            *(_cell(f"actions/by_type_and_category/{action}/{c}", per[c]) if c in per
                              else _NONE for c in categories)])
    action_rows.append([_name("all"), _cell("actions/total", actions["total"]), *("<td></td>" for _ in categories)])
    parts = [
        _table("Actions by type and category", ["action", "total", *categories], action_rows,
               "category: the reviewer's or the report's classification of the stream (A1/A2/B1/B2, grooming)"),
        _table("Detection source", ["source", "decisions"],
               [[_name(s), _cell(f"detection_sources/{s}", n)] for s, n in r["detection_sources"].items()],
               "the strongest evidence each decision cites; appeals' reinstatements are not detections"),
        _table("Automated and human decisions", ["made by", "decisions"],
               [[_name(k), _cell(f"automation/{k}", n)] for k, n in r["automation"].items()]),
        _table("Time from first evidence to action", ["action", "decisions", "median", "p95"],
               [[_name(a), _cell(f"time_to_action_ms/{a}/count", t["count"]),
                 _cell(f"time_to_action_ms/{a}/median", t["median"]), _cell(f"time_to_action_ms/{a}/p95", t["p95"])]
                for a, t in r["time_to_action_ms"].items()], "nearest-rank percentiles"),
    ]
    reports = r["authority_reports"]
    report_rows = [[_name("reports filed"), _cell("authority_reports/filed", reports["filed"])],
                   [_name("preservation requests"),
                    _cell("authority_reports/preservation_requests", reports["preservation_requests"])]]
    for group in ("by_trigger", "by_incident_type"):
        report_rows += [[_name(f"{group.replace('_', ' ')}: {k}"), _cell(f"authority_reports/{group}/{k}", n)]
                        for k, n in reports[group].items()]
    parts.append(_table("Authority reports and preservation requests", ["figure", "count"], report_rows))
    parts.append(_table("Review SLA", ["priority", "escalations", "met", "missed", "open", "met rate"],
                        [[_name(p), *(_cell(f"review_sla/{p}/{k}", s[k])
                                      for k in ("escalations", "met", "missed", "open", "met_rate"))]
                         for p, s in r["review_sla"].items()],
                        "met: a verdict settled the escalation by its review deadline; "
                        "met rate leaves out escalations still open"))
    parts.append(_table("Reviewer overturn rate (benign after escalation)", ["rule", "reviewed", "benign",
                                                                              "overturn rate"],
                        [[_name(rule), *(_cell(f"reviewer_overturn/{rule}/{k}", o[k])
                                         for k in ("reviewed", "benign", "overturn_rate"))]
                         for rule, o in r["reviewer_overturn"].items()]))
    parts.append(_table("Appeals", ["figure", "value"],
                        [[_name(k.replace("_", " ")), _cell(f"appeals/{k}", v)] for k, v in r["appeals"].items()],
                        "reversals: reinstate decisions; rate: reversals per appeal received"))
    dead = r["dead_letters"]
    parts.append(_table("Dead-lettered input", ["reason", "records"],
                        [[_name(k), _cell(f"dead_letters/by_reason/{k}", n)] for k, n in dead["by_reason"].items()]
                        + [[_name("all"), _cell("dead_letters/total", dead["total"])]]))
    topics = sorted(set(r["records"]["read"]) | set(r["records"]["unreadable"]))
    parts.append(_table("Records read (all periods)", ["topic", "read", "unreadable"],
                        [[_name(t), *(_cell(f"records/{k}/{t}", r["records"][k][t]) if t in r["records"][k]
                                      else _NONE for k in ("read", "unreadable"))]
                         for t in topics]))
    return "\n".join(parts)


def _svg(draw: Any, height: float = 2.6) -> str:
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "streamsafe", "font.size": 9,
                                "axes.spines.top": False, "axes.spines.right": False}):
        figure = Figure(figsize=(5.2, height), layout="constrained")
        draw(figure.add_subplot())
        buffer = io.BytesIO()
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode()


def _bars(items: Mapping[str, float], xlabel: str, color: str = "#3b6ea5") -> Any:
    def draw(ax: Any) -> None:
        names = list(items)[::-1]
        values = [items[n] for n in names]
        bars = ax.barh(names, values, color=color)
        ax.bar_label(bars, padding=2)
        ax.set_xlabel(xlabel)
        ax.margins(x=0.15)
    return draw


def _charts(r: dict[str, Any]) -> list[tuple[str, str]]:
    sla = r["review_sla"]

    def draw_sla(ax: Any) -> None:
        priorities = list(sla)
        left = [0] * len(priorities)
        for key, color in (("met", "#2e7d32"), ("missed", "#c62828"), ("open", "#9e9e9e")):
            values = [sla[p][key] for p in priorities]
            ax.barh(priorities, values, left=left, color=color, label=key)
            left = [a + b for a, b in zip(left, values, strict=True)]
        ax.invert_yaxis()
        ax.set_xlabel("escalations")
        ax.legend(loc="lower right", frameon=False)

    def draw_time(ax: Any) -> None:
        times = {a: t for a, t in r["time_to_action_ms"].items() if t["count"]}
        names = list(times)
        ax.bar([i - 0.2 for i in range(len(names))], [times[a]["median"] / 1000 for a in names], 0.4,
               label="median", color="#3b6ea5")
        ax.bar([i + 0.2 for i in range(len(names))], [times[a]["p95"] / 1000 for a in names], 0.4,
               label="p95", color="#f0a030")
        ax.set_xticks(range(len(names)), names)
        ax.set_ylabel("seconds")
        ax.legend(frameon=False)

    overturn = {rule: o["overturn_rate"] * 100 for rule, o in r["reviewer_overturn"].items()}
    return [
        ("Actions by type", _svg(_bars(r["actions"]["by_type"], "decisions"))),
        ("Detection source", _svg(_bars(r["detection_sources"], "decisions", "#6a4c93"))),
        ("Time from first evidence to action", _svg(draw_time)),
        ("Review SLA per priority", _svg(draw_sla)),
        ("Reviewer overturn rate per rule (%)",
         _svg(_bars(overturn, "% of reviewed escalations found benign", "#c62828"), 0.8 + 0.35 * len(overturn))),
        ("Dead-lettered input by reason", _svg(_bars(r["dead_letters"]["by_reason"], "records", "#757575"),
                                               0.8 + 0.35 * len(r["dead_letters"]["by_reason"]))),
    ]


_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:2rem auto;max-width:1150px;
color:#1d1d1f;padding:0 1rem}
h1{margin-bottom:.2rem}.period{color:#555;margin-top:0}
.tiles{display:flex;gap:1rem;flex-wrap:wrap;margin:1rem 0}
.tile{border:1px solid #ddd;border-radius:8px;padding:.6rem 1rem;min-width:9rem}
.tile b{display:block;font-size:1.6rem}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:1rem}
figure{margin:0;border:1px solid #eee;border-radius:8px;padding:.5rem}
figure img{width:100%}figcaption{font-weight:600;margin-bottom:.3rem}
.tables{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:0 2rem}
table{border-collapse:collapse;width:100%}th,td{border-bottom:1px solid #e5e5e5;padding:.25rem .5rem;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}.note{color:#666;font-size:.85rem;margin:.2rem 0}
.empty{color:#888;font-style:italic}h2{font-size:1.05rem;margin-top:1.4rem}
"""


def to_html(report: TransparencyReport, title: str = "StreamSafe transparency report") -> str:
    r = report.as_record()
    period = r["period"]
    tiles = [("Actions", "actions/total", r["actions"]["total"]),
             ("Authority reports", "authority_reports/filed", r["authority_reports"]["filed"]),
             ("Appeals", "appeals/received", r["appeals"]["received"]),
             ("Dead-lettered input", "dead_letters/total", r["dead_letters"]["total"])]
    tile_html = "".join(f'<div class="tile">{html.escape(name)}<b data-figure="{path}">{value}</b></div>'
                        for name, path, value in tiles)
    charts = "".join(f'<figure><figcaption>{html.escape(caption)}</figcaption>'
                     f'<img alt="{html.escape(caption)}" src="{uri}"></figure>' for caption, uri in _charts(r))
    data = orjson.dumps(r).decode().replace("</", "<\\/")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
            f"<h1>{html.escape(title)}</h1>"
            f'<p class="period">{html.escape(period["since_utc"])} to {html.escape(period["until_utc"])} '
            f"(up to, not including, the end); records as of {html.escape(period['as_of_utc'])}</p>"
            f'<p class="note">Clock: {html.escape(period["clock"])}</p>'
            f'<div class="tiles">{tile_html}</div><div class="charts">{charts}</div>'
            f'<div class="tables">{_tables(r)}</div>'
            f'<script type="application/json" id="transparency-data">{data}</script></body></html>\n')
