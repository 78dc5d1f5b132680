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

# oneDNN: Debian's dnnl-config.cmake insists on OpenCL (its GPU runtime), which we never use,
# so the library is imported directly.
find_path(NIMBLE_DNNL_INCLUDE_DIR oneapi/dnnl/dnnl.hpp REQUIRED)
find_library(NIMBLE_DNNL_LIBRARY dnnl REQUIRED)
if(NOT TARGET DNNL::dnnl)
  add_library(DNNL::dnnl UNKNOWN IMPORTED)
  set_target_properties(DNNL::dnnl PROPERTIES
    IMPORTED_LOCATION ${NIMBLE_DNNL_LIBRARY}
    INTERFACE_INCLUDE_DIRECTORIES ${NIMBLE_DNNL_INCLUDE_DIR})
endif()
