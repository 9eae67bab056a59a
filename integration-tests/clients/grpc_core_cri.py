#!/usr/bin/env python3
"""A CRI client on grpc-core (Python's grpcio), independent of tonic and of our own code.

Usage: grpc_core_cri.py SOCKET

Calls a CRI server over `unix:SOCKET` the way grpc-core's users do, with no generated
stubs: requests are protobuf bytes made here and answers are decoded here (the few fields
read are given by number, from the CRI's api.proto). Three channels differ only in the
HTTP/2 :authority they send:
  default     grpc-core's own choice (since 1.57, the socket path percent-encoded)
  path        the socket path itself, as kubelets of 1.20+ (grpc-go) send it
  localhost   what grpc-go sends today
Prints one JSON object: for each channel and call, {"code": NAME, "fields": {...}}.
"""
import json
import sys

import grpc


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def string_field(number, text):
    data = text.encode()
    return varint(number << 3 | 2) + varint(len(data)) + data


def decode(buf):
    """Top-level fields of a protobuf message: {number: [values]} (bytes or ints)."""
    fields, i = {}, 0
    while i < len(buf):
        key, i = read_varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = read_varint(buf, i)
        elif wire == 2:
            size, i = read_varint(buf, i)
            value, i = buf[i:i + size], i + size
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"wire type {wire}")
        fields.setdefault(number, []).append(value)
    return fields


def read_varint(buf, i):
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def call(channel, path, request):
    method = channel.unary_unary(path, request_serializer=None, response_deserializer=None)
    try:
        answer = method(request, timeout=20)
        fields = {}
        for number, values in decode(answer).items():
            v = values[0]
            fields[str(number)] = v.decode(errors="replace") if isinstance(v, bytes) else v
        return {"code": "OK", "fields": fields, "size": len(answer)}
    except grpc.RpcError as e:
        return {"code": e.code().name, "details": e.details()}


def main():
    socket = sys.argv[1]
    channels = {
        "default": [],
        "path": [("grpc.default_authority", socket)],
        "localhost": [("grpc.default_authority", "localhost")],
    }
    out = {"grpcio": grpc.__version__}
    for name, options in channels.items():
        with grpc.insecure_channel("unix:" + socket, options=options) as ch:
            out[name] = {
                "version_v1": call(ch, "/runtime.v1.RuntimeService/Version",
                                   string_field(1, "v1")),
                "version_v1alpha2": call(ch, "/runtime.v1alpha2.RuntimeService/Version",
                                         string_field(1, "v1alpha2")),
                "list_pods": call(ch, "/runtime.v1.RuntimeService/ListPodSandbox", b""),
                "list_images_v1alpha2": call(ch, "/runtime.v1alpha2.ImageService/ListImages",
                                             b""),
                # ContainerStatusRequest.container_id = 1
                "status_unknown": call(ch, "/runtime.v1.RuntimeService/ContainerStatus",
                                       string_field(1, "no-such-container")),
            }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
