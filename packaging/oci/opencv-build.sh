#!/bin/sh
# opencv-build.sh PREFIX: the `opencv` stage of Containerfile.cpu and Containerfile.cloud, and
# the same stage of packaging/oci/rootfs-check.sh (one script, so the image and the check
# cannot drift apart). Run as root on Debian 12 (bookworm).
#
# It builds Debian's own OpenCV 4.6 source (opencv 4.6.0+dfsg-12, with Debian's patches) with
# only the twelve modules gocv v0.31.0 links, and none of the dependencies that make Debian's
# libopencv packages ~0.9 GB installed: no Qt/GTK (highgui is built without a GUI backend;
# Takt never opens a window), no GDAL, OpenEXR, JPEG 2000, VTK, Java, Python, OpenCL, LAPACK
# or TBB. Kept: FFmpeg and GStreamer (video files, RTSP, GigE/CSI pipelines), V4L2 (USB
# cameras), JPEG, PNG, TIFF and WebP. Installed to PREFIX with PREFIX/lib/pkgconfig/opencv4.pc
# for gocv's `pkg-config opencv4`.
#
# Provenance: apt checks the .dsc and tarballs against bookworm's signed Sources index; the
# .dsc's sha256 is pinned here and the tarballs are checked against the sums it lists.
set -eu

PREFIX=${1:?usage: opencv-build.sh PREFIX}
OPENCV_DEB_VERSION=4.6.0+dfsg-12
# Twelve modules: what gocv v0.31.0's C++ wrappers include (ldd bin/takt-agent lists the same).
OPENCV_MODULES=core,imgproc,imgcodecs,videoio,highgui,video,objdetect,calib3d,features2d,dnn,photo,flann
# sha256 of opencv_4.6.0+dfsg-12.dsc (bookworm), which lists the sha256 of the source tarballs.
OPENCV_DSC_SHA256=66d014c59f65ed670ee05d5695e5c0a500fa7ce2539a32bfa15ef5a9da2a4ffd
JOBS=${JOBS:-$(nproc)}

export DEBIAN_FRONTEND=noninteractive
# Source packages: debian:12-slim lists its sources in deb822 form with Signed-By, and a
# separate deb-src line without it would conflict ("Conflicting values set for option
# Signed-By"), so the release's entry gets deb-src; a one-line sources.list gets a line.
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
	sed -i '0,/^Types: deb$/s//Types: deb deb-src/' /etc/apt/sources.list.d/debian.sources
else
	echo 'deb-src http://deb.debian.org/debian bookworm main' >/etc/apt/sources.list.d/opencv-src.list
fi
apt-get update
# Build tools, and the -dev packages of exactly the libraries the runtime stage installs
# (packaging/oci/opencv-runtime-packages); protobuf is Debian's, as in Debian's own build
# (the +dfsg source drops the bundled copy).
apt-get install -y --no-install-recommends \
    dpkg-dev cmake g++ make pkg-config \
    libavcodec-dev libavformat-dev libavutil-dev libswscale-dev \
    libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev \
    libjpeg62-turbo-dev libpng-dev libtiff-dev libwebp-dev zlib1g-dev \
    libprotobuf-dev protobuf-compiler

mkdir -p /usr/src/opencv
cd /usr/src/opencv
apt-get source --only-source "opencv=${OPENCV_DEB_VERSION}"
# Checked again here, not only by apt: the .dsc is the one pinned below, and every tarball
# matches its Checksums-Sha256 line (apt-get source has already unpacked them with
# dpkg-source, which checks the same sums; a mismatch stops the build either way).
DSC="opencv_${OPENCV_DEB_VERSION}.dsc"
echo "${OPENCV_DSC_SHA256}  ${DSC}" | sha256sum -c -
sed -n '/^Checksums-Sha256:/,/^[^ ]/{/^ /p}' "$DSC" | awk '{print $1 "  " $3}' >dsc.sha256
test "$(wc -l <dsc.sha256)" -ge 2
sha256sum -c dsc.sha256
cd "opencv-${OPENCV_DEB_VERSION%%+*}+dfsg"

cmake -S . -B build \
    -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_INSTALL_PREFIX="$PREFIX" \
    -DCMAKE_INSTALL_LIBDIR=lib \
    -DBUILD_LIST="$OPENCV_MODULES" \
    -DBUILD_SHARED_LIBS=ON \
    -DOPENCV_GENERATE_PKGCONFIG=ON \
    -DBUILD_TESTS=OFF -DBUILD_PERF_TESTS=OFF -DBUILD_EXAMPLES=OFF -DBUILD_DOCS=OFF \
    -DBUILD_opencv_apps=OFF -DBUILD_JAVA=OFF -DBUILD_opencv_python2=OFF -DBUILD_opencv_python3=OFF \
    -DINSTALL_C_EXAMPLES=OFF -DINSTALL_PYTHON_EXAMPLES=OFF -DINSTALL_TESTS=OFF \
    -DWITH_QT=OFF -DWITH_GTK=OFF -DWITH_OPENGL=OFF -DWITH_VTK=OFF \
    -DWITH_GDAL=OFF -DWITH_GDCM=OFF -DWITH_OPENEXR=OFF -DWITH_OPENJPEG=OFF -DWITH_JASPER=OFF \
    -DWITH_IMGCODEC_HDR=ON -DWITH_IMGCODEC_PXM=ON -DWITH_IMGCODEC_PFM=ON -DWITH_IMGCODEC_SUNRASTER=ON \
    -DWITH_JPEG=ON -DBUILD_JPEG=OFF -DWITH_PNG=ON -DBUILD_PNG=OFF -DWITH_TIFF=ON -DBUILD_TIFF=OFF \
    -DWITH_WEBP=ON -DBUILD_WEBP=OFF -DBUILD_ZLIB=OFF \
    -DWITH_FFMPEG=ON -DWITH_GSTREAMER=ON -DWITH_V4L=ON -DWITH_LIBV4L=OFF \
    -DWITH_1394=OFF -DWITH_GPHOTO2=OFF -DWITH_XINE=OFF -DWITH_OPENNI=OFF -DWITH_OPENNI2=OFF \
    -DWITH_VA=OFF -DWITH_VA_INTEL=OFF -DWITH_OBSENSOR=OFF \
    -DWITH_OPENCL=OFF -DWITH_CUDA=OFF -DWITH_VULKAN=OFF -DWITH_HALIDE=OFF -DWITH_OPENVINO=OFF \
    -DWITH_IPP=OFF -DWITH_ITT=OFF -DWITH_TBB=OFF -DWITH_OPENMP=OFF -DWITH_PTHREADS_PF=ON \
    -DWITH_LAPACK=OFF -DWITH_EIGEN=OFF -DWITH_PROTOBUF=ON -DBUILD_PROTOBUF=OFF \
    -DPROTOBUF_UPDATE_FILES=ON -DWITH_QUIRC=OFF -DWITH_ADE=OFF \
    -DOPENCV_SKIP_PYTHON_LOADER=ON

cmake --build build --parallel "$JOBS"
cmake --install build --strip

# The runtime stage finds the libraries through ld.so.conf.d; nothing else of the build is kept.
echo "$PREFIX/lib" >"$PREFIX/ld.so.conf"
test -f "$PREFIX/lib/pkgconfig/opencv4.pc"
for m in $(echo "$OPENCV_MODULES" | tr , ' '); do
    test -e "$PREFIX/lib/libopencv_$m.so.406" || { echo "opencv-build: libopencv_$m.so.406 missing" >&2; exit 1; }
done
