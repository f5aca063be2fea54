"""One report per sweep: runs and Pareto CSVs, figures, the paper's tables, and an index.html linking them."""

import html
import shutil
from datetime import datetime, timezone
from pathlib import Path

from mlflow.tracking import MlflowClient

from dashboards.claims import claim_table, searched_field
from dashboards.claims import to_markdown as claims_markdown
from dashboards.figures import energy_model_data, learning_columns, write_figures
from dashboards.pareto import hypervolume_curve, pareto_table, reference_text
from dashboards.plateau import PLATEAU_TEXT, plateau_table
from dashboards.plateau import to_markdown as plateau_markdown
from dashboards.runs import energy_layers, epoch_history, load_runs
from dashboards.tables import write_tables
from runrecord import PARETO_OBJECTIVES, finished_full_budget, objectives_text
from slt.errors import InputError


def partial_dir(out: Path) -> Path:
    """Where a report is written before it is moved into place: beside it, hidden, never mistaken for it."""
    return out.with_name(f".{out.name}.partial")


def write_report(experiment: str, tracking_uri: str, out_dir: str | Path, parent_run_id: str | None = None,
                 *, log_to_mlflow: bool = True, against: tuple[str, str | None] | None = None) -> dict:
    """Write the report into `out_dir` (which must be new or empty) and log it to the sweep's parent run.
    `against`: (experiment, parent run id or None for its latest) of a grid sweep over the field this sweep
    searches; the claims then judge the search's pick against the grid's cells.

    Everything is written into a partial folder beside `out_dir` first (what a writer killed half-way
    left there is discarded), logged to MLflow from there, and then moved into place in one rename:
    a folder at `out_dir` is always a complete report."""
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise InputError("out", f"{out} already holds files; choose a new folder (nothing recorded is overwritten)")
    runs, parent = load_runs(experiment, tracking_uri, parent_run_id)
    if runs.empty:
        raise InputError("experiment", f"sweep {parent.info.run_name!r} has no trial runs yet")
    grid = grid_parent = None
    if against is not None:
        try:
            grid, grid_parent = load_runs(against[0], tracking_uri, against[1])
        except InputError as err:  # (load_runs names its own argument, --experiment)
            raise InputError("against", err.problem) from None
        if grid.empty:
            raise InputError("against", f"sweep {grid_parent.info.run_name!r} has no trial runs yet")
        searched_field(runs, grid)
    work = partial_dir(out)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    written = _write_files(experiment, tracking_uri, parent, runs, work, grid, grid_parent)
    if log_to_mlflow:
        MlflowClient(tracking_uri).log_artifacts(parent.info.run_id, str(work), artifact_path="report")
    if out.exists():
        out.rmdir()  # empty (checked above)
    work.rename(out)
    moved = lambda path: out / Path(path).relative_to(work)  # noqa: E731
    return {"dir": out, "index": out / "index.html",
            "pareto_csv": out / "pareto.csv" if written["pareto"] is not None else None,
            "figures": [{**f, "png": moved(f["png"]), "html": moved(f["html"])} for f in written["figures"]],
            "tables": [{**t, **{k: moved(t[k]) for k in ("csv", "md", "tex")}} for t in written["tables"]],
            "claims": written["claims"], "plateau": written["plateau"], "parent_run_id": parent.info.run_id}


def front_objectives(parent) -> list[tuple[str, str]]:
    """What the report's Pareto front ranks: a multi-objective sweep's own objectives (its parent's
    `objectives` tag, e.g. val_accuracy:max,energy_mj_effective:min), else PARETO_OBJECTIVES."""
    pairs = [item.partition(":")[::2] for item in parent.data.tags.get("objectives", "").split(",") if ":" in item]
    return pairs if len(pairs) >= 2 else list(PARETO_OBJECTIVES)


def _write_files(experiment: str, tracking_uri: str, parent, runs, out: Path, grid=None, grid_parent=None) -> dict:
    """Every file of the report into `out`: runs and Pareto CSVs, figures, tables, claims, index.html
    (`grid`, `grid_parent`: the runs and parent run of the grid sweep a search is judged against, if any)."""
    runs.to_csv(out / "runs.csv", index=False)
    pareto = None
    objectives = front_objectives(parent)
    if all(name in runs.columns for name, _ in objectives):
        pareto = pareto_table(runs, objectives)
        pareto.to_csv(out / "pareto.csv", index=False)
    history = epoch_history(tracking_uri, runs)
    figures = write_figures(runs, pareto, out, energy_layers(tracking_uri, runs), history)
    plateau = plateau_table(runs, history, learning_columns(runs))
    if not plateau.empty:
        plateau.to_csv(out / "plateau.csv", index=False)
        (out / "plateau.md").write_text(f"Did training level off? {PLATEAU_TEXT}\n\n" + plateau_markdown(plateau))
    energy = energy_model_data(runs)
    if not energy.empty:  # every estimate per method, one configuration each: mean, std, count (mJ per image)
        flat = energy.set_axis([f"{name}_{stat}" for name, stat in energy.columns], axis=1)
        flat.insert(0, "method", flat.index.map(energy.attrs["method"]))
        flat.insert(1, "p", flat.index.map(energy.attrs["p"]))
        flat.insert(2, "setting", flat.index.map(energy.attrs["setting"]))
        flat.reset_index(drop=True).to_csv(out / "energy.csv", index=False)
    tables = write_tables(runs, out)
    claims = claim_table(runs, grid)
    against = "" if grid_parent is None else (f"; its search judged against the grid sweep "
                                              f"{grid_parent.info.run_name} (parent run {grid_parent.info.run_id})")
    if not claims.empty:
        claims.to_csv(out / "claims.csv", index=False)
        (out / "claims.md").write_text(f"The paper's claims on this sweep's runs{against} (dashboards/claims.py)\n\n"
                                       + claims_markdown(claims))
    (out / "index.html").write_text(_index_html(experiment, parent, runs, pareto, figures, tables, claims, plateau,
                                                out, html.escape(against)))
    return {"pareto": pareto, "figures": figures, "tables": tables, "claims": claims, "plateau": plateau}


def _hypervolume_text(pareto) -> str:
    """'; hypervolume 0.0021 after 96 epochs (reference ...)' for the index, or '' without a full-budget trial."""
    curve = hypervolume_curve(pareto, pareto.attrs["objectives"])
    if curve.attrs["reference"] is None:
        return ""
    reference = reference_text(curve)
    last = curve.iloc[-1]
    return (f"; hypervolume {last['hypervolume']:.4g} after {last['epochs_spent']:.0f} epochs of all trials "
            f"(moocore; reference point {html.escape(reference)}: each objective's worst full-budget value + 10 % "
            "of its range)")


def _index_html(experiment, parent, runs, pareto, figures, tables, claims, plateau, out: Path, against: str = "") -> str:
    finished = int(finished_full_budget(runs).sum())
    parts = [f"<h1>Sweep {html.escape(parent.info.run_name or experiment)}</h1>",
             f"<p>Experiment <code>{html.escape(experiment)}</code>, parent run <code>{parent.info.run_id}</code>; "
             f"{len(runs)} trials, {finished} finished with their full budget, "
             f"{int(runs['early_stopped'].sum())} early-stopped, {int((runs['run_status'] == 'FAILED').sum())} failed"
             f"{against}. "
             f"Written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.</p>",
             '<ul><li><a href="runs.csv">runs.csv</a> (every trial: params, metrics, status)</li>']
    if (out / "energy.csv").is_file():
        parts.append('<li><a href="energy.csv">energy.csv</a> (energy per image under every estimate, per method, '
                     'one configuration per method (tickets at p = 0.5 where they ran it; the setting column names any '
                     'other choice): mean, std, n of full-budget runs)</li>')
    if pareto is not None:
        parts.append(f'<li><a href="pareto.csv">pareto.csv</a> ({objectives_text(pareto.attrs["objectives"])}; '
                     f'{int(pareto["is_pareto"].sum())} on the front, ranked over {pareto["ranked_on"].iloc[0]}; '
                     f'the test accuracy of each is a column){_hypervolume_text(pareto)}</li>')
    parts.append("</ul><h2>Figures</h2>")
    for figure in figures:
        png, page = Path(figure["png"]).relative_to(out), Path(figure["html"]).relative_to(out)
        parts.append(f'<figure><a href="{page}"><img src="{png}" alt="{html.escape(figure["title"])}" width="640">'
                     f'</a><figcaption>{html.escape(figure["title"])} — <a href="{page}">interactive</a>'
                     f'</figcaption></figure>')
    if not figures:
        parts.append("<p>No parameter varies across finished runs: nothing to plot.</p>")
    for table in tables:
        name = table["table"]
        parts.append(f"<h2>Table {name}</h2><p>Test accuracy (%): ours mean ± std over seeds (n runs, epochs trained) "
                     "[paper]. "
                     f'<a href="table_{name}.csv">CSV</a> · <a href="table_{name}.md">Markdown</a> · '
                     f'<a href="table_{name}.tex">LaTeX</a></p>{table["html"]}')
    if not claims.empty:
        parts.append('<h2>The paper\'s claims</h2><p>Test accuracies; the one choice (the best λ) reads validation. '
                     'Verdict "holds": the paper\'s direction beyond two standard errors over seeds; a verdict needs '
                     'at least two seeds per compared cell and equal budgets. '
                     '<a href="claims.csv">CSV</a> · <a href="claims.md">Markdown</a></p>'
                     + claims.drop(columns=["paper"]).to_html(border=0, index=False, float_format="%.3g"))
    if not plateau.empty:
        parts.append(f"<h2>Trained to a plateau?</h2><p>{html.escape(PLATEAU_TEXT)} "
                     '<a href="plateau.csv">CSV</a> · <a href="plateau.md">Markdown</a></p>'
                     + plateau.to_html(border=0, index=False, float_format="%.3g", na_rep=""))
    return ("<!doctype html><html><head><meta charset='utf-8'><title>Sweep report</title><style>"
            "body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse;font-size:12px}"
            "td,th{padding:3px 6px;border-bottom:1px solid #ddd}figure{display:inline-block;margin:8px}</style>"
            "</head><body>" + "\n".join(parts) + "</body></html>\n")
