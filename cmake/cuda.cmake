# The CUDA backend: built into target ${PROJECT_NAME} when the CUDA toolkit (nvcc + runtime), cuDNN (8.9 / 9.x) and
# cuBLAS are all found and VGGNET_CUDA is ON. Sets VGG_CUDA_BUILT. Otherwise prints one line saying what is missing.
#
# Where things are looked for (first hit wins):
#   nvcc      CMAKE_CUDA_COMPILER, $CUDA_HOME/bin, $CUDA_PATH/bin, PATH, /usr/local/cuda/bin
#   cuDNN     $CUDNN_ROOT, $CUDNN_PATH, $CUDNN_HOME, the toolkit, /usr, /usr/local/cuda, Python's nvidia/cudnn package
#   cuBLAS    the toolkit, $CUBLAS_ROOT, Python's nvidia/cublas package
#   NCCL      $NCCL_ROOT, $NCCL_HOME, the toolkit, /usr, /usr/local/cuda, Python's nvidia/nccl package (optional:
#             without it the CUDA backend is built all the same, and distributed training on GPUs uses gloo; sets
#             VGG_NCCL_VERSION when found, else VGG_NCCL_MISSING says why)
# Library files may be versioned only (libcudnn.so.9 without libcudnn.so): they are linked by full path.
set(VGG_CUDA_BUILT OFF)
set(_vgg_missing "")

if(NOT VGGNET_CUDA)
  set(_vgg_missing "VGGNET_CUDA is OFF")
endif()

# ---- toolkit
if(NOT _vgg_missing)
  if(NOT CMAKE_CUDA_COMPILER)
    find_program(VGG_NVCC nvcc
      HINTS "$ENV{CUDA_HOME}/bin" "$ENV{CUDA_PATH}/bin" "$ENV{CUDA_ROOT}/bin" /usr/local/cuda/bin /opt/cuda/bin)
    if(VGG_NVCC)
      set(CMAKE_CUDA_COMPILER "${VGG_NVCC}" CACHE FILEPATH "CUDA compiler" FORCE)
    endif()
  endif()
  if(NOT CMAKE_CUDA_COMPILER)
    set(_vgg_missing "no nvcc (set CUDA_HOME or put nvcc on PATH)")
  else()
    get_filename_component(_vgg_nvcc_bin "${CMAKE_CUDA_COMPILER}" DIRECTORY)
    get_filename_component(_vgg_cuda_root "${_vgg_nvcc_bin}" DIRECTORY)
    if(NOT CUDAToolkit_ROOT)
      set(CUDAToolkit_ROOT "${_vgg_cuda_root}")
    endif()
    find_package(CUDAToolkit QUIET)
    if(NOT CUDAToolkit_FOUND)
      set(_vgg_missing "CUDA toolkit not found next to ${CMAKE_CUDA_COMPILER}")
    endif()
  endif()
endif()

# ---- Python's nvidia-* packages (PyTorch's wheels bring cuDNN and cuBLAS this way; `nvidia` may be a namespace
# package, so look at every sys.path entry rather than import it).
set(_vgg_py_nvidia "")
if(NOT _vgg_missing)
  find_program(VGG_PYTHON3 NAMES python3 python)
  if(VGG_PYTHON3)
    execute_process(
      COMMAND "${VGG_PYTHON3}" -c
        "import sys, os; print(';'.join(sorted({os.path.realpath(os.path.join(p, 'nvidia')) for p in sys.path if p and os.path.isdir(os.path.join(p, 'nvidia'))})))"
      OUTPUT_VARIABLE _vgg_py_nvidia OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE _vgg_py_rc)
    if(NOT _vgg_py_rc EQUAL 0)
      set(_vgg_py_nvidia "")
    endif()
  endif()
endif()

macro(_vgg_roots out sub)
  set(${out} "")
  foreach(_d ${_vgg_py_nvidia})
    list(APPEND ${out} "${_d}/${sub}")
  endforeach()
endmacro()

set(_vgg_lib_suffixes lib lib64 lib/x86_64-linux-gnu lib/aarch64-linux-gnu targets/x86_64-linux/lib)
set(_vgg_inc_suffixes include include/x86_64-linux-gnu include/aarch64-linux-gnu targets/x86_64-linux/include)

# ---- cuDNN
if(NOT _vgg_missing)
  _vgg_roots(_vgg_cudnn_py cudnn)
  set(_vgg_cudnn_roots "$ENV{CUDNN_ROOT}" "$ENV{CUDNN_PATH}" "$ENV{CUDNN_HOME}" "${CUDAToolkit_LIBRARY_ROOT}"
      "${_vgg_cuda_root}" /usr /usr/local/cuda ${_vgg_cudnn_py})
  find_path(VGG_CUDNN_INCLUDE_DIR cudnn.h HINTS ${_vgg_cudnn_roots} PATH_SUFFIXES ${_vgg_inc_suffixes})
  find_library(VGG_CUDNN_LIBRARY NAMES cudnn libcudnn.so.9 libcudnn.so.8
    HINTS ${_vgg_cudnn_roots} PATH_SUFFIXES ${_vgg_lib_suffixes})
  if(NOT VGG_CUDNN_INCLUDE_DIR OR NOT VGG_CUDNN_LIBRARY)
    set(_vgg_missing "cuDNN not found (set CUDNN_ROOT, or pip install nvidia-cudnn-cu12)")
  else()
    set(_vgg_cudnn_ver_h "${VGG_CUDNN_INCLUDE_DIR}/cudnn_version.h")
    if(NOT EXISTS "${_vgg_cudnn_ver_h}")
      set(_vgg_cudnn_ver_h "${VGG_CUDNN_INCLUDE_DIR}/cudnn.h")
    endif()
    file(STRINGS "${_vgg_cudnn_ver_h}" _vgg_cudnn_major REGEX "^#define CUDNN_MAJOR +[0-9]+")
    string(REGEX REPLACE ".*CUDNN_MAJOR +([0-9]+).*" "\\1" _vgg_cudnn_major "${_vgg_cudnn_major}")
    file(STRINGS "${_vgg_cudnn_ver_h}" _vgg_cudnn_minor REGEX "^#define CUDNN_MINOR +[0-9]+")
    string(REGEX REPLACE ".*CUDNN_MINOR +([0-9]+).*" "\\1" _vgg_cudnn_minor "${_vgg_cudnn_minor}")
    if(_vgg_cudnn_major AND (_vgg_cudnn_major LESS 8 OR (_vgg_cudnn_major EQUAL 8 AND _vgg_cudnn_minor LESS 9)))
      set(_vgg_missing "cuDNN ${_vgg_cudnn_major}.${_vgg_cudnn_minor} is too old (need 8.9 or 9.x)")
    endif()
  endif()
endif()

# ---- cuBLAS (+ cuBLASLt, which libcublas needs at run time)
if(NOT _vgg_missing)
  _vgg_roots(_vgg_cublas_py cublas)
  set(_vgg_cublas_roots "$ENV{CUBLAS_ROOT}" "${_vgg_cuda_root}" ${CUDAToolkit_INCLUDE_DIRS} ${CUDAToolkit_LIBRARY_DIR}
      /usr/local/cuda /usr ${_vgg_cublas_py})
  find_path(VGG_CUBLAS_INCLUDE_DIR cublas_v2.h HINTS ${_vgg_cublas_roots} PATH_SUFFIXES ${_vgg_inc_suffixes} .)
  find_library(VGG_CUBLAS_LIBRARY NAMES cublas libcublas.so.13 libcublas.so.12
    HINTS ${_vgg_cublas_roots} PATH_SUFFIXES ${_vgg_lib_suffixes} .)
  find_library(VGG_CUBLASLT_LIBRARY NAMES cublasLt libcublasLt.so.13 libcublasLt.so.12
    HINTS ${_vgg_cublas_roots} PATH_SUFFIXES ${_vgg_lib_suffixes} .)
  if(NOT VGG_CUBLAS_INCLUDE_DIR OR NOT VGG_CUBLAS_LIBRARY)
    set(_vgg_missing "cuBLAS not found (set CUBLAS_ROOT, or pip install nvidia-cublas-cu12)")
  endif()
endif()

if(_vgg_missing)
  message(STATUS "vggnet: building CPU-only (${_vgg_missing})")
  return()
endif()

# ---- everything found: compile the backend into the addon
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES OR CMAKE_CUDA_ARCHITECTURES STREQUAL "" OR
   CMAKE_CUDA_ARCHITECTURES STREQUAL "52")
  set(CMAKE_CUDA_ARCHITECTURES "80;90")
endif()
set(CMAKE_CUDA_STANDARD 17)
set(CMAKE_CUDA_STANDARD_REQUIRED ON)
enable_language(CUDA)

# Our kernels: the backend's (native/cuda/*.cu) and the data layer's augmentation (native/data/*.cu).
file(GLOB VGG_CUDA_KERNEL_SOURCES CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/native/cuda/*.cu ${CMAKE_SOURCE_DIR}/native/data/*.cu)
file(GLOB VGG_CUDA_HOST_SOURCES CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/native/cuda/*.cc)

# Our kernels in their own static library: the addon's host flags (-Wall, -fvisibility=hidden) are not nvcc's.
add_library(vggnet_cuda_kernels STATIC ${VGG_CUDA_KERNEL_SOURCES})
set_target_properties(vggnet_cuda_kernels PROPERTIES POSITION_INDEPENDENT_CODE ON CUDA_RUNTIME_LIBRARY None
                      CUDA_ARCHITECTURES "${CMAKE_CUDA_ARCHITECTURES}")
target_include_directories(vggnet_cuda_kernels PRIVATE ${CMAKE_SOURCE_DIR}/native)
target_compile_options(vggnet_cuda_kernels PRIVATE
  $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-fPIC,-fvisibility=hidden --expt-relaxed-constexpr -lineinfo>)

target_sources(${PROJECT_NAME} PRIVATE ${VGG_CUDA_HOST_SOURCES})
target_include_directories(${PROJECT_NAME} PRIVATE ${VGG_CUDNN_INCLUDE_DIR} ${VGG_CUBLAS_INCLUDE_DIR}
                           ${CUDAToolkit_INCLUDE_DIRS})
target_compile_definitions(${PROJECT_NAME} PRIVATE VGG_WITH_CUDA=1)
set_source_files_properties(${VGG_CUDA_HOST_SOURCES} PROPERTIES COMPILE_OPTIONS "-Wno-deprecated-declarations")
# CMake turns a versioned full path (libcudnn.so.9) into -lcudnn, which fails where no unversioned symlink exists
# (pip wheels): link through unversioned symlinks made in the build tree. DT_NEEDED is still the library's SONAME.
set(_vgg_linkdir "${CMAKE_BINARY_DIR}/vgg-cuda-libs")
file(MAKE_DIRECTORY "${_vgg_linkdir}")
set(_vgg_link_libs "")
foreach(_lib ${VGG_CUDNN_LIBRARY} ${VGG_CUBLAS_LIBRARY} ${VGG_CUBLASLT_LIBRARY})
  get_filename_component(_name "${_lib}" NAME)
  string(REGEX REPLACE "\\.so(\\.[0-9]+)*$" ".so" _plain "${_name}")
  file(CREATE_LINK "${_lib}" "${_vgg_linkdir}/${_plain}" SYMBOLIC)
  list(APPEND _vgg_link_libs "${_vgg_linkdir}/${_plain}")
endforeach()
target_link_libraries(${PROJECT_NAME} PRIVATE vggnet_cuda_kernels ${_vgg_link_libs})
target_link_libraries(${PROJECT_NAME} PRIVATE CUDA::cudart_static)

# The stub that stands in for this backend in CPU-only builds must not be compiled too.
if(EXISTS ${CMAKE_SOURCE_DIR}/native/cuda_stub.cc)
  set_source_files_properties(${CMAKE_SOURCE_DIR}/native/cuda_stub.cc PROPERTIES HEADER_FILE_ONLY ON)
endif()

# Find the (possibly pip-installed) libraries at run time without LD_LIBRARY_PATH.
set(_vgg_rpath "")
foreach(_lib ${VGG_CUDNN_LIBRARY} ${VGG_CUBLAS_LIBRARY} ${VGG_CUBLASLT_LIBRARY})
  get_filename_component(_dir "${_lib}" DIRECTORY)
  list(APPEND _vgg_rpath "${_dir}")
endforeach()
list(REMOVE_DUPLICATES _vgg_rpath)
set_target_properties(${PROJECT_NAME} PROPERTIES BUILD_RPATH "${_vgg_rpath}" INSTALL_RPATH "${_vgg_rpath}")

# ---- NCCL (optional): distributed training's engine for CUDA tensors.
_vgg_roots(_vgg_nccl_py nccl)
set(_vgg_nccl_roots "$ENV{NCCL_ROOT}" "$ENV{NCCL_HOME}" "${_vgg_cuda_root}" ${CUDAToolkit_LIBRARY_ROOT} /usr
    /usr/local/cuda ${_vgg_nccl_py})
find_path(VGG_NCCL_INCLUDE_DIR nccl.h HINTS ${_vgg_nccl_roots} PATH_SUFFIXES ${_vgg_inc_suffixes})
find_library(VGG_NCCL_LIBRARY NAMES nccl libnccl.so.2 HINTS ${_vgg_nccl_roots} PATH_SUFFIXES ${_vgg_lib_suffixes})
set(VGG_NCCL_VERSION "")
set(VGG_NCCL_MISSING "")
if(NOT VGG_NCCL_INCLUDE_DIR OR NOT VGG_NCCL_LIBRARY)
  set(VGG_NCCL_MISSING "not found (set NCCL_ROOT, or pip install nvidia-nccl-cu12)")
else()
  file(STRINGS "${VGG_NCCL_INCLUDE_DIR}/nccl.h" _vgg_nccl_ver REGEX "^#define NCCL_(MAJOR|MINOR|PATCH) +[0-9]+")
  string(REGEX REPLACE "#define NCCL_[A-Z]+ +" "" _vgg_nccl_ver "${_vgg_nccl_ver}")
  string(REPLACE ";" "." VGG_NCCL_VERSION "${_vgg_nccl_ver}")
  if(VGG_NCCL_VERSION VERSION_LESS "2.18")
    set(VGG_NCCL_MISSING "NCCL ${VGG_NCCL_VERSION} at ${VGG_NCCL_LIBRARY} is too old (need 2.18 or newer)")
    set(VGG_NCCL_VERSION "")
  else()
    get_filename_component(_name "${VGG_NCCL_LIBRARY}" NAME)
    string(REGEX REPLACE "\\.so(\\.[0-9]+)*$" ".so" _plain "${_name}")
    file(CREATE_LINK "${VGG_NCCL_LIBRARY}" "${_vgg_linkdir}/${_plain}" SYMBOLIC)
    target_include_directories(${PROJECT_NAME} PRIVATE ${VGG_NCCL_INCLUDE_DIR})
    target_link_libraries(${PROJECT_NAME} PRIVATE "${_vgg_linkdir}/${_plain}")
    target_compile_definitions(${PROJECT_NAME} PRIVATE VGG_WITH_NCCL=1)
    get_filename_component(_dir "${VGG_NCCL_LIBRARY}" DIRECTORY)
    list(APPEND _vgg_rpath "${_dir}")
    list(REMOVE_DUPLICATES _vgg_rpath)
    set_target_properties(${PROJECT_NAME} PROPERTIES BUILD_RPATH "${_vgg_rpath}" INSTALL_RPATH "${_vgg_rpath}")
  endif()
endif()

set(VGG_CUDA_BUILT ON)
message(STATUS "vggnet: building with CUDA ${CUDAToolkit_VERSION} (archs ${CMAKE_CUDA_ARCHITECTURES}), "
               "cuDNN ${_vgg_cudnn_major}.${_vgg_cudnn_minor} (${VGG_CUDNN_LIBRARY}), cuBLAS (${VGG_CUBLAS_LIBRARY})")
