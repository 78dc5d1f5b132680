# Declarative target helpers. Project targets get the warning set and sanitizers; third-party
# headers are included as SYSTEM so their warnings do not fail the build.
#
#   nimble_cc_library(NAME name SRCS ... [HDRS ...] [DEPS ...] [PUBLIC_DEFINES ...])
#   nimble_cc_binary(NAME name SRCS ... [DEPS ...] [OUTPUT_NAME n])
#   nimble_cc_test(NAME name SRCS ... [DEPS ...] [LABELS unit|integration|conformance|cuda]
#                  [ARGS ...] [TIMEOUT s])

set(NIMBLE_WARNINGS -Wall -Wextra -Werror -Wno-unused-parameter)

function(_nimble_common target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:${NIMBLE_WARNINGS}>
    $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra,-Werror,-Wno-unused-parameter>)
  target_include_directories(${target} PUBLIC ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR})
  if(NIMBLE_SANITIZE)
    # GCC's -Wmaybe-uninitialized misfires on sanitizer-instrumented inlining (absl containers).
    target_compile_options(${target} PRIVATE
      $<$<COMPILE_LANGUAGE:CXX>:-fsanitize=${NIMBLE_SANITIZE} -fno-omit-frame-pointer>
      $<$<CXX_COMPILER_ID:GNU>:-Wno-maybe-uninitialized>)
    target_link_options(${target} PUBLIC -fsanitize=${NIMBLE_SANITIZE})
  endif()
endfunction()

function(nimble_cc_library)
  cmake_parse_arguments(A "" "NAME" "SRCS;HDRS;DEPS;PUBLIC_DEFINES" ${ARGN})
  if(A_SRCS)
    add_library(${A_NAME} STATIC ${A_SRCS} ${A_HDRS})
    _nimble_common(${A_NAME})
    target_link_libraries(${A_NAME} PUBLIC ${A_DEPS})
    target_compile_definitions(${A_NAME} PUBLIC ${A_PUBLIC_DEFINES})
    set_target_properties(${A_NAME} PROPERTIES POSITION_INDEPENDENT_CODE ON)
  else()
    add_library(${A_NAME} INTERFACE ${A_HDRS})
    target_include_directories(${A_NAME} INTERFACE ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR})
    target_link_libraries(${A_NAME} INTERFACE ${A_DEPS})
    target_compile_definitions(${A_NAME} INTERFACE ${A_PUBLIC_DEFINES})
  endif()
endfunction()

function(nimble_cc_binary)
  cmake_parse_arguments(A "" "NAME;OUTPUT_NAME" "SRCS;DEPS" ${ARGN})
  add_executable(${A_NAME} ${A_SRCS})
  _nimble_common(${A_NAME})
  target_link_libraries(${A_NAME} PRIVATE ${A_DEPS})
  if(A_OUTPUT_NAME)
    set_target_properties(${A_NAME} PROPERTIES OUTPUT_NAME ${A_OUTPUT_NAME})
  endif()
endfunction()

# One ctest entry per test binary (fast: no per-case process start). Tests labelled `cuda` use a
# main that exits with code 77 when no GPU is usable, which ctest reports as skipped.
function(nimble_cc_test)
  cmake_parse_arguments(A "" "NAME;TIMEOUT" "SRCS;DEPS;LABELS;ARGS;DEFINES" ${ARGN})
  add_executable(${A_NAME} ${A_SRCS})
  _nimble_common(${A_NAME})
  if(NOT A_LABELS)
    set(A_LABELS unit)
  endif()
  if("cuda" IN_LIST A_LABELS)
    target_sources(${A_NAME} PRIVATE ${PROJECT_SOURCE_DIR}/tests/cuda_test_main.cc)
    target_link_libraries(${A_NAME} PRIVATE ${A_DEPS} nimble_cuda_runtime GTest::gmock GTest::gtest)
  else()
    target_link_libraries(${A_NAME} PRIVATE ${A_DEPS} GTest::gmock GTest::gtest_main)
  endif()
  target_compile_definitions(${A_NAME} PRIVATE ${A_DEFINES})
  add_test(NAME ${A_NAME} COMMAND ${A_NAME} ${A_ARGS} WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
  if(NOT A_TIMEOUT)
    set(A_TIMEOUT 300)
  endif()
  set_tests_properties(${A_NAME} PROPERTIES LABELS "${A_LABELS}" TIMEOUT ${A_TIMEOUT}
    SKIP_RETURN_CODE 77)
endfunction()
