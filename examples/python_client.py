#!/usr/bin/python3
"""Uploads an ONNX model to nimble-server and runs one inference, over the KServe v2 gRPC protocol.

Needs only Debian's python3-grpcio, python3-protobuf, python3-numpy and protoc (no grpc_tools):
the message classes are generated from proto/ at start, and the RPCs are called by method path.

    /usr/bin/python3 examples/python_client.py --server 127.0.0.1:8001 \\
        --model bert --onnx build/models-small/bert/model.onnx --seq 16

Any KServe v2 client (Triton's tritonclient[grpc] too) works the same way.
"""
import argparse
import importlib
import os
import subprocess
import sys
import tempfile

import grpc
import numpy as np

PROTO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "proto")
SERVICE = "/inference.GRPCInferenceService/"

# KServe datatype -> NumPy dtype (BYTES is length-prefixed, handled separately).
DTYPES = {"BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
          "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
          "INT64": np.int64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64}


def load_protos():
    out = tempfile.mkdtemp(prefix="nimble_proto_")
    subprocess.run(["protoc", f"--proto_path={PROTO_DIR}", f"--python_out={out}",
                    "model_config.proto", "grpc_service.proto"], check=True)
    sys.path.insert(0, out)
    return importlib.import_module("grpc_service_pb2")


class Client:
    def __init__(self, address, pb):
        self.pb = pb
        options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
        self.channel = grpc.insecure_channel(address, options=options)

    def call(self, method, request, response_type, timeout=600):
        rpc = self.channel.unary_unary(SERVICE + method,
                                       request_serializer=lambda m: m.SerializeToString(),
                                       response_deserializer=response_type.FromString)
        return rpc(request, timeout=timeout)

    def upload(self, model, onnx_path, config=None):
        request = self.pb.RepositoryModelLoadRequest(model_name=model)
        with open(onnx_path, "rb") as f:
            request.parameters["file:1/model.onnx"].bytes_param = f.read()
        if config:
            request.parameters["config"].string_param = config
        # Returns once the model is compiled, warmed up and READY (or raises with the reason).
        self.call("RepositoryModelLoad", request, self.pb.RepositoryModelLoadResponse)

    def metadata(self, model):
        return self.call("ModelMetadata", self.pb.ModelMetadataRequest(name=model),
                         self.pb.ModelMetadataResponse)

    def infer(self, model, inputs):
        """inputs: name -> NumPy array. Returns name -> NumPy array."""
        request = self.pb.ModelInferRequest(model_name=model, id="example")
        for name, array in inputs.items():
            datatype = next(k for k, v in DTYPES.items() if np.dtype(v) == array.dtype)
            request.inputs.add(name=name, datatype=datatype, shape=list(array.shape))
            request.raw_input_contents.append(np.ascontiguousarray(array).tobytes())
        response = self.call("ModelInfer", request, self.pb.ModelInferResponse)
        outputs = {}
        for tensor, raw in zip(response.outputs, response.raw_output_contents):
            outputs[tensor.name] = np.frombuffer(raw, dtype=DTYPES[tensor.datatype]).reshape(
                tuple(tensor.shape))
        return outputs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="127.0.0.1:8001")
    parser.add_argument("--model", default="bert")
    parser.add_argument("--onnx", help="upload this file as version 1 (else use what is loaded)")
    parser.add_argument("--config", help="config.json text to upload with the model")
    parser.add_argument("--seq", type=int, default=16, help="length of each dynamic dim")
    args = parser.parse_args()

    client = Client(args.server, load_protos())
    if args.onnx:
        client.upload(args.model, args.onnx, args.config)
        print(f"uploaded {args.onnx} as '{args.model}': READY")
    meta = client.metadata(args.model)
    rng = np.random.default_rng(0)
    inputs = {}
    for t in meta.inputs:
        shape = [d if d >= 0 else (1 if i == 0 else args.seq) for i, d in enumerate(t.shape)]
        dtype = DTYPES[t.datatype]
        if np.issubdtype(dtype, np.integer):
            inputs[t.name] = rng.integers(0, 2, size=shape).astype(dtype)
        else:
            inputs[t.name] = rng.standard_normal(shape).astype(dtype)
    for name, array in client.infer(args.model, inputs).items():
        print(f"{name}: {array.dtype}{list(array.shape)} mean {float(array.mean()):.6f}")


if __name__ == "__main__":
    main()
