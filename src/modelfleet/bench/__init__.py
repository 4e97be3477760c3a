"""`modelfleet bench`: honest load and scale tests of inference endpoints.

Library first: ``run_bench(spec) -> BenchResult``; ``write_result`` / ``read_result`` for the versioned
results file; ``merge_results`` to combine generators; ``modelfleet.bench.report.write_report`` for HTML.
"""

from modelfleet.bench.merge import merge_results
from modelfleet.bench.results import BenchResult, read_result, read_results, write_result
from modelfleet.bench.runner import run_bench

__all__ = ["BenchResult", "merge_results", "read_result", "read_results", "run_bench", "write_result"]
