// Where unit b of a row sits in the weight layout (infer_tensor::tensor::pack_weights): rows
// in groups of W_GROUP with a group's units interleaved (unit b of its W_GROUP rows side by
// side), so that a CPU adapter's matvec invocation, which walks 8 rows unit by unit, reads
// one contiguous 128-byte run per unit instead of 8 scattered 16-byte ones. W_GROUP is the
// device's Device::weight_group (set by the launcher): 8 on CPU adapters, 1 (plain
// row-major units) on GPUs. Prepended to every weight kernel.
override W_GROUP: u32 = 1u;

fn w_index(row: u32, b: u32, nb: u32) -> u32 {
    return (row / W_GROUP) * W_GROUP * nb + b * W_GROUP + row % W_GROUP;
}
