#!/usr/bin/python3
"""Uploads an ONNX model to nimble-server, waits until it is READY, and runs one inference.

Only Debian packages: python3-grpcio, python3-protobuf, python3-numpy, and protoc +
grpc_python_plugin (protobuf-compiler, protobuf-compiler-grpc) to generate the protocol's stubs
from proto/ at start (or python3 -m grpc_tools.protoc when that is installed instead).
The calls are plain KServe v2 / Triton gRPC, so the same code works against any such server.

  examples/python_client.py --model bert --onnx bert.onnx \\
      --shape input_ids=1x128 --shape attention_mask=1x128 --shape token_type_ids=1x128
  examples/python_client.py --model bert --no-upload          # already loaded: just infer
"""
import argparse
import importlib
import json
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import grpc
import numpy as np

PROTO_DIR = pathlib.Path(__file__).resolve().parent.parent / "proto"

# KServe v2 datatype -> NumPy dtype (little-endian, as raw_*_contents are). BF16 has no NumPy
# equivalent: it travels as uint16 bit patterns (the high half of a float32).
DTYPES = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
    "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
    "INT64": np.int64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
    "BF16": np.uint16,
}


def load_stubs(proto_dir, out_dir):
    """Generates grpc_service_pb2(_grpc).py from the project's protos and imports them."""
    protos = [str(proto_dir / "grpc_service.proto"), str(proto_dir / "model_config.proto")]
    plugin = shutil.which("grpc_python_plugin")
    if shutil.which("protoc") and plugin:
        command = ["protoc", f"--plugin=protoc-gen-grpc_python={plugin}",
                   f"--grpc_python_out={out_dir}"]
    else:
        command = [sys.executable, "-m", "grpc_tools.protoc", f"--grpc_python_out={out_dir}"]
    command += [f"--proto_path={proto_dir}", f"--python_out={out_dir}", *protos]
    try:
        subprocess.run(command, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        sys.exit(f"cannot generate the gRPC stubs ({' '.join(command)}): {e}\n"
                 "install protobuf-compiler and protobuf-compiler-grpc (scripts/install-deps.sh)")
    sys.path.insert(0, str(out_dir))
    return (importlib.import_module("grpc_service_pb2"),
            importlib.import_module("grpc_service_pb2_grpc"))


def parse_shapes(specs):
    shapes = {}
    for spec in specs:
        name, _, dims = spec.partition("=")
        try:
            shapes[name] = [int(d) for d in dims.lower().split("x")]
        except ValueError:
            sys.exit(f"--shape {spec!r}: expected NAME=D0xD1x... (e.g. input_ids=1x128)")
    return shapes


def random_tensor(datatype, shape, rng, int_high):
    """Random values of a KServe datatype; integers in [0, int_high) so they are valid indices
    (token ids, segment ids, masks) for most models."""
    if datatype == "BYTES":
        items = [f"item{i}".encode() for i in range(int(np.prod(shape)))]
        raw = b"".join(len(s).to_bytes(4, "little") + s for s in items)  # KServe BYTES framing
        return items, raw
    if datatype not in DTYPES:
        sys.exit(f"datatype {datatype} is not supported by this example")
    if datatype == "BOOL":
        array = rng.integers(0, 2, shape).astype(np.bool_)
    elif datatype in ("FP16", "FP32", "FP64"):
        array = rng.standard_normal(shape).astype(DTYPES[datatype])
    elif datatype == "BF16":
        array = (rng.standard_normal(shape).astype(np.float32).view(np.uint32) >> 16).astype(
            np.uint16)
    else:
        array = rng.integers(0, int_high, shape).astype(DTYPES[datatype])
    return array, array.astype(array.dtype.newbyteorder("<")).tobytes()


def decode_output(output, raw):
    if output.datatype == "BYTES":
        items, offset = [], 0
        while offset < len(raw):
            size = int.from_bytes(raw[offset:offset + 4], "little")
            items.append(raw[offset + 4:offset + 4 + size])
            offset += 4 + size
        return np.array(items, dtype=object).reshape(output.shape)
    array = np.frombuffer(raw, dtype=np.dtype(DTYPES[output.datatype]).newbyteorder("<"))
    if output.datatype == "BF16":
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array.reshape(output.shape)


def upload(pb, stub, args):
    config = "{}"
    if args.config:
        config = pathlib.Path(args.config).read_text()
        json.loads(config)  # fail here, not on the server, on a malformed file
    model_bytes = pathlib.Path(args.onnx).read_bytes()
    request = pb.RepositoryModelLoadRequest(model_name=args.model)
    request.parameters["config"].string_param = config
    request.parameters[f"file:{args.version}/model.onnx"].bytes_param = model_bytes
    print(f"uploading {args.onnx} ({len(model_bytes)} bytes) as {args.model} v{args.version}")
    stub.RepositoryModelLoad(request, timeout=args.rpc_timeout)


def wait_ready(pb, stub, args):
    # Loading compiles and warms up in the background; ModelReady turns true when it is done.
    deadline = time.monotonic() + args.ready_timeout
    while True:
        try:
            if stub.ModelReady(pb.ModelReadyRequest(name=args.model, version=args.version),
                               timeout=args.rpc_timeout).ready:
                return
        except grpc.RpcError as e:
            if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND):
                raise
        if time.monotonic() > deadline:
            sys.exit(f"{args.model} v{args.version} is not READY after {args.ready_timeout} s")
        time.sleep(0.5)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="127.0.0.1:8001", help="gRPC address of nimble-server")
    parser.add_argument("--model", required=True, help="model name")
    parser.add_argument("--version", default="1", help="model version to upload and call")
    parser.add_argument("--onnx", help="ONNX file to upload (RepositoryModelLoad)")
    parser.add_argument("--config", help="model config.json to upload with it (default: {})")
    parser.add_argument("--no-upload", action="store_true", help="call an already loaded model")
    parser.add_argument("--shape", action="append", default=[], metavar="NAME=D0xD1",
                        help="shape of an input (needed for its dynamic dims); repeatable")
    parser.add_argument("--dynamic-dim", type=int, default=1,
                        help="size for dynamic (-1) dims without --shape (default 1)")
    parser.add_argument("--int-high", type=int, default=2,
                        help="integer inputs are random in [0, INT_HIGH) (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ready-timeout", type=float, default=600,
                        help="seconds to wait for compile + warm-up (default 600)")
    parser.add_argument("--rpc-timeout", type=float, default=60, help="seconds per call")
    parser.add_argument("--proto-dir", type=pathlib.Path, default=PROTO_DIR)
    args = parser.parse_args()
    if not args.no_upload and not args.onnx:
        parser.error("--onnx is required unless --no-upload")

    with tempfile.TemporaryDirectory(prefix="nimble-stubs-") as stubs_dir:
        pb, pb_grpc = load_stubs(args.proto_dir, pathlib.Path(stubs_dir))
        channel = grpc.insecure_channel(args.url, options=[
            ("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)])
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        try:
            run(pb, stub, args)
        except grpc.RpcError as e:
            sys.exit(f"{args.url}: {e.code().name}: {e.details()}")


def run(pb, stub, args):
    if not args.no_upload:
        upload(pb, stub, args)
    wait_ready(pb, stub, args)
    metadata = stub.ModelMetadata(pb.ModelMetadataRequest(name=args.model, version=args.version),
                                  timeout=args.rpc_timeout)
    print(f"{metadata.name} versions {list(metadata.versions)} platform {metadata.platform!r}")
    for kind, tensors in (("input", metadata.inputs), ("output", metadata.outputs)):
        for t in tensors:
            print(f"  {kind} {t.name}: {t.datatype} {list(t.shape)}")

    shapes = parse_shapes(args.shape)
    unknown = set(shapes) - {t.name for t in metadata.inputs}
    if unknown:
        sys.exit(f"--shape names no input of {args.model}: {', '.join(sorted(unknown))}")
    rng = np.random.default_rng(args.seed)
    request = pb.ModelInferRequest(model_name=args.model, model_version=args.version,
                                   id="python-client-1")
    for t in metadata.inputs:
        shape = shapes.get(t.name, [args.dynamic_dim if d < 0 else d for d in t.shape])
        if len(shape) != len(t.shape) or any(d >= 0 and d != s for d, s in zip(t.shape, shape)):
            sys.exit(f"--shape {t.name}={'x'.join(map(str, shape))} does not fit {list(t.shape)}")
        _, raw = random_tensor(t.datatype, shape, rng, args.int_high)
        request.inputs.add(name=t.name, datatype=t.datatype, shape=shape)
        request.raw_input_contents.append(raw)
        print(f"input {t.name}: {t.datatype} {shape}")

    start = time.perf_counter()
    response = stub.ModelInfer(request, timeout=args.rpc_timeout)
    elapsed_ms = (time.perf_counter() - start) * 1e3
    print(f"ModelInfer {response.model_name} v{response.model_version} id {response.id!r}: "
          f"{elapsed_ms:.2f} ms")
    if response.raw_output_contents and len(response.raw_output_contents) != len(response.outputs):
        sys.exit("response has raw contents for only some outputs")
    np.set_printoptions(precision=4, threshold=8, edgeitems=3)
    for i, output in enumerate(response.outputs):
        if response.raw_output_contents:
            value = decode_output(output, response.raw_output_contents[i])
        else:  # typed contents: the one field set is the one that matches the datatype
            fields = output.contents.ListFields()
            value = np.array(fields[0][1] if fields else []).reshape(output.shape)
        print(f"output {output.name}: {output.datatype} {list(output.shape)}\n{value}")


if __name__ == "__main__":
    main()
