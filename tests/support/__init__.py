"""What tests share besides conftest.py's fixtures, one module per thing provided:

- linear_model, logreg_model: small real model artifacts (ONNX written in memory; scikit-learn → ONNX)
- fleet_specs: fleet spec files for local fleets
- servers: real `modelfleet serve` and `fleet router` processes on loopback
- refserver: the bench reference servers (benchmarks/bench_refserver.py) as processes
- bench_results: small real bench results
- ports: loopback ports
"""
