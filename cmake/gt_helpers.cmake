# Helpers that apply gt's warnings and sanitizer flags to gt's own targets only.

# GT_SANITIZER is a comma-separated list: address,undefined is the usual
# pair; thread stands alone (it cannot share a process with address).
# UBSan findings abort, so a test that meets one fails instead of printing.
set(_gt_sanitizers address thread undefined)
string(REPLACE "," ";" _gt_sanitizer_list "${GT_SANITIZER}")
foreach(_s IN LISTS _gt_sanitizer_list)
  if(NOT _s IN_LIST _gt_sanitizers)
    message(FATAL_ERROR "gt: GT_SANITIZER is a comma-separated list of ${_gt_sanitizers}, "
                        "got '${GT_SANITIZER}' ('${_s}' is not one of them)")
  endif()
endforeach()
if("thread" IN_LIST _gt_sanitizer_list AND "address" IN_LIST _gt_sanitizer_list)
  message(FATAL_ERROR "gt: GT_SANITIZER='${GT_SANITIZER}': thread and address cannot be combined; "
                      "build them in separate build dirs")
endif()
set(_gt_sanitizer_flags)
if(GT_SANITIZER)
  set(_gt_sanitizer_flags -fsanitize=${GT_SANITIZER} -fno-omit-frame-pointer)
  if("undefined" IN_LIST _gt_sanitizer_list)
    list(APPEND _gt_sanitizer_flags -fno-sanitize-recover=undefined)
  endif()
endif()

# GT_FUZZ (docs/fuzzing.md): every gt target gets libFuzzer's coverage
# instrumentation plus ASan and UBSan, so a fuzzer sees edges and bad reads
# inside the libraries it drives, not only in its own file. A separate
# sanitizer would conflict with those flags.
#
# Note [gcc fuzz build]: with clang, -fsanitize=fuzzer does it all. Debian's
# LibTorch headers do not compile with clang in C++20 (Note [executor
# fuzzing] in tests/fuzz/CMakeLists.txt), so the executor's fuzzer is built
# with GCC: its ASan and UBSan, -fsanitize-coverage=trace-pc,trace-cmp, and
# clang's libFuzzer runtime (an archive of plain C++, which g++ links). GCC's
# trace-pc hook is one libFuzzer no longer counts; tests/fuzz/gcc_coverage.cpp
# turns it into edge counters libFuzzer reads, and gt_add_fuzzer links each
# fuzzer with it.
if(GT_FUZZ)
  if(GT_SANITIZER)
    message(FATAL_ERROR "gt: GT_FUZZ already builds with address and undefined: leave GT_SANITIZER empty")
  endif()
  if(CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    set(_gt_fuzz_flags -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined)
  elseif(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    set(_gt_fuzz_flags -fsanitize=address,undefined -fno-sanitize-recover=undefined
                       -fsanitize-coverage=trace-pc,trace-cmp)
    if(NOT GT_LIBFUZZER_ARCHIVE)
      find_program(GT_CLANG_FOR_LIBFUZZER NAMES clang++ clang)
      if(GT_CLANG_FOR_LIBFUZZER)
        execute_process(COMMAND ${GT_CLANG_FOR_LIBFUZZER} -print-runtime-dir
                        OUTPUT_VARIABLE _gt_clang_runtime_dir OUTPUT_STRIP_TRAILING_WHITESPACE
                        ERROR_QUIET)
      endif()
      find_file(GT_LIBFUZZER_ARCHIVE
                NAMES libclang_rt.fuzzer-${CMAKE_SYSTEM_PROCESSOR}.a libclang_rt.fuzzer.a
                PATHS "${_gt_clang_runtime_dir}" NO_DEFAULT_PATH
                DOC "gt: clang's libFuzzer runtime, for a GT_FUZZ build with GCC")
    endif()
    if(NOT GT_LIBFUZZER_ARCHIVE)
      message(FATAL_ERROR "gt: a GT_FUZZ build with GCC links clang's libFuzzer runtime, and "
                          "libclang_rt.fuzzer-${CMAKE_SYSTEM_PROCESSOR}.a was not found under "
                          "`clang++ -print-runtime-dir` ('${_gt_clang_runtime_dir}'): install "
                          "clang and libclang-rt-dev, or set -DGT_LIBFUZZER_ARCHIVE=PATH")
    endif()
  else()
    message(FATAL_ERROR "gt: GT_FUZZ needs clang or GCC, got ${CMAKE_CXX_COMPILER_ID}: configure "
                        "with -DCMAKE_CXX_COMPILER=clang++ (Debian: clang libclang-rt-dev)")
  endif()
endif()

function(gt_target_defaults target)
  target_compile_features(${target} PUBLIC cxx_std_20)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wno-unused-parameter)
  if(GT_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
  if(GT_SANITIZER)
    target_compile_options(${target} PRIVATE ${_gt_sanitizer_flags})
    target_link_options(${target} PUBLIC -fsanitize=${GT_SANITIZER})
  endif()
  if(GT_FUZZ)
    target_compile_options(${target} PRIVATE ${_gt_fuzz_flags} -fno-omit-frame-pointer)
    target_link_options(${target} PUBLIC -fsanitize=address,undefined)
  endif()
endfunction()

# gt_add_library(name STATIC|SHARED sources...)
function(gt_add_library name kind)
  add_library(${name} ${kind} ${ARGN})
  gt_target_defaults(${name})
endfunction()

function(gt_add_executable name)
  add_executable(${name} ${ARGN})
  gt_target_defaults(${name})
endfunction()

# gt_add_test_exe(name sources...): a Catch2 v2 binary whose test cases ctest discovers.
function(gt_add_test_exe name)
  add_executable(${name} ${ARGN})
  gt_target_defaults(${name})
  target_link_libraries(${name} PRIVATE Catch2::Catch2)
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR})
endfunction()

# gt_add_catch_tests(name sources... LIBS libs...): a test binary with Catch2's
# shared main, registered with ctest under the label `name`; test cases tagged
# [gpu] are skipped unless GT_GPU_TESTS is on.
function(gt_add_catch_tests name)
  cmake_parse_arguments(ARG "" "" "LIBS" ${ARGN})
  gt_add_test_exe(${name} ${ARG_UNPARSED_ARGUMENTS})
  target_link_libraries(${name} PRIVATE gt_catch_main ${ARG_LIBS})
  # Each case carries its binary's name as a label (ctest -L gt_integration_tests);
  # sanitized builds run several times slower and get more time.
  # Timings ([bench] cases) mean nothing under a sanitizer and are left out.
  set(timeout 300)
  set(spec "")
  if(GT_SANITIZER)
    set(timeout 900)
    set(spec "~[bench]")
  endif()
  if(NOT GT_GPU_TESTS)
    string(APPEND spec "~[gpu]")
  endif()
  if(spec)
    catch_discover_tests(${name} TEST_SPEC "${spec}" PROPERTIES TIMEOUT ${timeout} LABELS ${name})
  else()
    catch_discover_tests(${name} PROPERTIES TIMEOUT ${timeout} LABELS ${name})
  endif()
endfunction()
