//! Compiles the seccomp filter table (`resources/seccomp/x86_64.json`) to BPF with
//! seccompiler at build time, as Firecracker does, into `$OUT_DIR/seccomp_filters.rs`: one array of
//! `(code, jt, jf, k)` instructions per thread kind, which `src/seccomp.rs` includes.

use std::fmt::Write;

const TABLE: &str = "resources/seccomp/x86_64.json";
const KINDS: [&str; 4] = ["vmm", "api", "vcpu", "blk_io"];

fn main() {
    println!("cargo:rerun-if-changed={TABLE}");
    let json = std::fs::read(TABLE).unwrap_or_else(|e| panic!("{TABLE}: {e}"));
    let map = seccompiler::compile_from_json(json.as_slice(), seccompiler::TargetArch::x86_64)
        .unwrap_or_else(|e| panic!("{TABLE}: {e}"));
    let mut out = String::from(
        "/// One BPF instruction: (code, jt, jf, k).\n\
         pub type Insn = (u16, u8, u8, u32);\n\
         /// The built-in filters: (thread kind, BPF instructions).\n\
         pub static FILTERS: &[(&str, &[Insn])] = &[\n",
    );
    for kind in KINDS {
        let program = map
            .get(kind)
            .unwrap_or_else(|| panic!("{TABLE}: no filter for {kind}"));
        write!(out, "    (\"{kind}\", &[").unwrap();
        for i in program {
            write!(out, "({}, {}, {}, {}), ", i.code, i.jt, i.jf, i.k).unwrap();
        }
        out.push_str("]),\n");
    }
    assert_eq!(map.len(), KINDS.len(), "{TABLE}: unknown thread kinds");
    out.push_str("];\n");
    let dest = std::path::Path::new(&std::env::var("OUT_DIR").unwrap()).join("seccomp_filters.rs");
    std::fs::write(dest, out).unwrap();
}
