# Every dependency comes from a Debian package (scripts/install-deps.sh); nothing is fetched.
find_package(Threads REQUIRED)
find_package(absl CONFIG REQUIRED)
find_package(Protobuf REQUIRED)
find_package(gRPC CONFIG REQUIRED)
find_package(spdlog CONFIG REQUIRED)
find_package(prometheus-cpp CONFIG REQUIRED)
find_package(TBB CONFIG REQUIRED)
find_package(GTest CONFIG REQUIRED)
find_package(benchmark CONFIG REQUIRED)

find_program(NIMBLE_PROTOC protoc REQUIRED)
find_program(NIMBLE_GRPC_CPP_PLUGIN grpc_cpp_plugin REQUIRED)
