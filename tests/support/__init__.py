"""What tests share besides conftest.py's fixtures, one module per thing provided:

- linear_model, logreg_model: small real model artifacts (ONNX written in memory; scikit-learn → ONNX)
- torch_mlp: small PyTorch modules (module:function sources, TorchScript and torch.save files of them)
- hf_heads: tiny random Hugging Face classification heads (sequence, token) on the bundled vocabulary
- sum_model: SumModel, a test double of the runtime Model protocol with outputs a test can compute
- asgi: the serve core (ModelRepository, DataPlane, V2App) built directly and driven over ASGI
- servers: real `modelfleet serve` and `fleet router` processes on loopback
- transport_server: the router's HTTP/1 server protocol in an event-loop thread
- refserver: the bench reference servers (benchmarks/bench_refserver.py) as processes
- bench_results: small real bench results
- fleet_specs: fleet spec files for local fleets
- ports: ports reported by the server that bound them, and ports that refuse connections
- loopback_guard: fails a test that connects anywhere but loopback (installed by conftest.py)
"""
