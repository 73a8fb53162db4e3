"""Build the cutover dashboard with Grafana's foundation SDK and write ``monitoring/grafana/cutover_dashboard.json``.

``python monitoring/generate_dashboard.py`` (re)writes the committed JSON; ``--check`` exits 1 when it is stale
(``tests/test_prometheus.py`` checks the same). Chroma and Qdrant side by side, from the app wrapper's metrics
(:mod:`runbook_lib.app.metrics`): which backend is live and the dual-write backlog, then per backend p50/p95/p99
search latency, queries per second, error rate by kind and calls in flight. The queries are in :data:`PANELS`, so
the tests can ask a real Prometheus exactly what the dashboard asks.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import common as gc
from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.builders import prometheus as gp
from grafana_foundation_sdk.builders import stat as gs
from grafana_foundation_sdk.builders import timeseries as gt
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm

OUT = Path(__file__).resolve().parent / "grafana" / "cutover_dashboard.json"
UID = "vector-db-cutover"
BACKENDS = (("chroma", "ChromaDB"), ("qdrant", "Qdrant"))
DATASOURCE = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
SEL = 'backend="{backend}",operation="search",collection=~"$collection"'
WINDOW = "$__rate_interval"

#: (title, unit, [(legend, PromQL with {backend})]) for each side-by-side pair of time series panels.
PANELS: list[tuple[str, str, list[tuple[str, str]]]] = [
    (
        "Search latency",
        "s",
        [
            (
                f"p{q}",
                f"histogram_quantile(0.{q}, sum by (le) "
                f"(rate(vector_db_request_duration_seconds_bucket{{{SEL}}}[{WINDOW}])))",
            )
            for q in (50, 95, 99)
        ],
    ),
    (
        "Queries per second",
        "reqps",
        [("queries/s", f"sum(rate(vector_db_request_duration_seconds_count{{{SEL}}}[{WINDOW}]))")],
    ),
    (
        "Error rate",
        "percentunit",
        [
            (
                "{{kind}}",
                f"sum by (kind) (rate(vector_db_errors_total{{{SEL}}}[{WINDOW}])) / ignoring (kind) group_left "
                f"sum(rate(vector_db_request_duration_seconds_count{{{SEL}}}[{WINDOW}]))",
            )
        ],
    ),
    (
        "In flight",
        "short",
        [("{{operation}}", 'sum by (operation) (vector_db_in_flight_requests{backend="{backend}"})')],
    ),
]
LIVE_BACKEND = "max by (backend) (vector_db_live_backend)"
BACKLOG = "sum by (target) (vector_db_dual_write_backlog)"


def expressions(backend: str) -> list[tuple[str, str, str]]:
    """(panel title, legend, PromQL) of every time series the dashboard draws for ``backend``."""
    return [
        (title, legend, expr.replace("{backend}", backend)) for title, _, targets in PANELS for legend, expr in targets
    ]


def _query(expr: str, legend: str, ref: str) -> gp.Dataquery:
    return gp.Dataquery().expr(expr).legend_format(legend).ref_id(ref).range().datasource(DATASOURCE)


def _timeseries(title: str, unit: str, backend: str, name: str, targets: list[tuple[str, str]]) -> gt.Panel:
    panel = (
        gt.Panel()
        .title(f"{name} · {title}")
        .datasource(DATASOURCE)
        .unit(unit)
        .min(0)
        .span(12)
        .height(8)
        .fill_opacity(10)
        .line_width(1)
        .legend(
            gc.VizLegendOptions()
            .show_legend(True)
            .display_mode(cm.LegendDisplayMode.LIST)
            .placement(cm.LegendPlacement.BOTTOM)
        )
        .tooltip(gc.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI))
    )
    for k, (legend, expr) in enumerate(targets):
        panel = panel.with_target(_query(expr.replace("{backend}", backend), legend, chr(ord("A") + k)))
    return panel


def _stat(title: str, description: str) -> gs.Panel:
    return (
        gs.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .reduce_options(gc.ReduceDataOptions().calcs(["lastNotNull"]))
        .graph_mode(cm.BigValueGraphMode.NONE)
        .color_mode(cm.BigValueColorMode.VALUE)
        .span(12)
        .height(4)
    )


def build() -> dm.Dashboard:
    live = (
        _stat("Live backend (VECTOR_DB)", "1: the backend the app's VectorDBClient searches; 0: standby.")
        .with_target(_query(LIVE_BACKEND, "{{backend}}", "A").instant())
        .mappings(
            [
                dm.ValueMap(
                    options={
                        "0": dm.ValueMappingResult(text="standby", color="text"),
                        "1": dm.ValueMappingResult(text="LIVE", color="green"),
                    },
                )
            ]
        )
    )
    backlog = (
        _stat(
            "Dual-write journal backlog", "Writes applied to the primary backend and not yet to the target (dual mode)."
        )
        .with_target(_query(BACKLOG, "to {{target}}", "A"))
        .unit("short")
        .thresholds(
            gd.ThresholdsConfig()
            .mode(dm.ThresholdsMode.ABSOLUTE)
            .steps([dm.Threshold(value=None, color="green"), dm.Threshold(value=1000, color="red")])
        )
    )
    board = (
        gd.Dashboard("Vector DB cutover: ChromaDB → Qdrant")
        .uid(UID)
        .description("The app's VectorDBClient metrics, ChromaDB and Qdrant side by side (runbook_lib.app.metrics).")
        .tags(["vector-db", "cutover", "qdrant", "chromadb"])
        .editable()
        .time("now-1h", "now")
        .refresh("10s")
        .timezone("browser")
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .with_variable(gd.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
        .with_variable(
            gd.QueryVariable("collection")
            .label("Collection")
            .datasource(DATASOURCE)
            .query("label_values(vector_db_request_duration_seconds_count, collection)")
            .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(dm.VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )
        .with_row(gd.Row("Cutover"))
        .with_panel(live)
        .with_panel(backlog)
    )
    for title, unit, targets in PANELS:
        board = board.with_row(gd.Row(title))
        for backend, name in BACKENDS:
            board = board.with_panel(_timeseries(title, unit, backend, name, targets))
    return board.build()


def render() -> str:
    return json.dumps(build(), cls=JSONEncoder, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed JSON differs")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUT.is_file() or OUT.read_text() != text:
            print(f"{OUT} is stale: run python {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
