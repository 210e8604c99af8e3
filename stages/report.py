"""DVC stage `report`: plots/*.csv (DVC plot data) and reports/index.html from the pipeline's outputs."""

from hpopipe import artifacts
from hpopipe.atomic import atomic_write_text
from hpopipe.config import load_params
from hpopipe.entry import run
from hpopipe.report.render import REPORT_HTML, load_sources, plot_frames, plot_path, render_html


def main() -> None:
    params = load_params()
    sources = load_sources(params.data)
    frames = plot_frames(sources, params.seed)
    for name, frame in frames.items():
        artifacts.write_frame(plot_path(name), frame)
    atomic_write_text(REPORT_HTML, render_html(sources, frames, params.seed))


if __name__ == "__main__":
    run(main)
