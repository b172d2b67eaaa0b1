"""geoxai.report: tables, figures, image grids and a static HTML page from evaluation folders.

``write_report(["eval/ep7", "eval/ep14"], "report/")`` is the entry point (``geoxai report`` on the
command line); see docs/report.md for what each file holds and how to read it.
"""

from geoxai.report.evaluations import Evaluation, load_evaluation
from geoxai.report.report import FORMATS, ReportResult, write_report

__all__ = ["FORMATS", "Evaluation", "ReportResult", "load_evaluation", "write_report"]
