fn main() {
    retain_build::link_libtorch_cuda();
}
