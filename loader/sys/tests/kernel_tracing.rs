//! `BPF_RAW_TRACEPOINT_OPEN` on the running kernel (root): a raw tracepoint program
//! linked to `sys_enter`, the link's info naming the program, a name the kernel has
//! no tracepoint for refused, and what `BPF_LINK_DETACH` answers for such a link
//! (the engine detaches a link without update by dropping it where the kernel has no
//! detach for the link type).

#[path = "../../tests/testenv/mod.rs"]
mod testenv;

use handover_sys::{Bpf, Insn, ProgLoad, ProgramType};

#[test]
fn a_raw_tracepoint_link_is_opened_by_name_and_unknown_names_are_refused() {
    const TEST: &str = "a_raw_tracepoint_link_is_opened_by_name_and_unknown_names_are_refused";
    if !testenv::privileged(TEST) {
        return;
    }
    let bpf = Bpf::kernel();
    let fs = testenv::Bpffs::mount();
    let insns = [
        Insn::new(0xb7, 0, 0, 0, 0), // r0 = 0
        Insn::new(0x95, 0, 0, 0, 0), // exit
    ];
    let mut load = ProgLoad::new(ProgramType::RawTracepoint, &insns, "GPL");
    load.name = "raw_probe";
    let prog = bpf.prog_load(&load).unwrap();
    let prog_id = bpf.prog_info(&prog).unwrap().id;
    let link = bpf.raw_tracepoint_open(&prog, Some("sys_enter")).unwrap();
    let info = bpf.link_info(&link).unwrap();
    assert_eq!(info.prog_id, prog_id, "{info:?}");
    bpf.obj_pin(&link, &fs.path().join("raw_link")).unwrap();

    let unknown = bpf
        .raw_tracepoint_open(&prog, Some("handover_no_such_tracepoint"))
        .unwrap_err();
    assert_eq!(unknown.errno(), Some(libc::ENOENT), "{unknown}");
    let nul = bpf
        .raw_tracepoint_open(&prog, Some("sys\0enter"))
        .unwrap_err();
    assert!(nul.to_string().contains("NUL"), "{nul}");

    match bpf.link_detach(&link) {
        Ok(()) => eprintln!("{TEST}: this kernel detaches raw tracepoint links"),
        Err(e) => assert_eq!(e.errno(), Some(libc::EOPNOTSUPP), "{e}"),
    }
}
