"""Triton's V2 gRPC protocol (`inference.GRPCInferenceService`): the committed .proto files and their
generated code (see generate.py), and the tensor conversion between its messages and the codec's types."""
