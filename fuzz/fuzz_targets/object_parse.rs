//! Parses arbitrary bytes as a BPF object and checks what a successful parse promises:
//! every reference points at something that exists, calls land on the functions they
//! name, BTF.ext records stay inside their program, and parsing is deterministic.

#![no_main]

use handover_loader::{KsymKind, Object, RefTarget};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let obj = match Object::parse(data) {
        Ok(obj) => obj,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    let again = Object::parse(data).expect("a second parse of the same bytes succeeds");
    assert_eq!(obj.maps(), again.maps());
    assert_eq!(obj.programs(), again.programs());

    for m in obj.maps() {
        if let (Some(btf), Some(k)) = (obj.btf(), m.key_type) {
            assert_eq!(btf.size_of(k).ok(), Some(m.key_size), "map {} key", m.name);
        }
        if let Some(d) = &m.initial_data {
            assert_eq!(d.len(), m.value_size as usize);
        }
        for s in &m.initial_slots {
            assert!(s.index < m.max_entries);
        }
    }
    for p in obj.programs() {
        let total: usize = p.functions.iter().map(|f| f.len).sum();
        assert_eq!(total, p.insns.len());
        assert_eq!(p.functions.first().map(|f| f.start), Some(0));
        for r in &p.references {
            let insn = p.insns.get(r.insn).expect("reference inside the program");
            match &r.target {
                RefTarget::Map { map } => assert!(obj.map(map).is_some()),
                RefTarget::MapValue { map, offset } => {
                    let m = obj.map(map).expect("global data map exists");
                    assert!(*offset < m.value_size.max(1));
                }
                RefTarget::Ksym { name, kind, .. } => {
                    assert!(!name.is_empty());
                    // An address load, or a call already marked as a kfunc call.
                    assert!(
                        insn.code == 0x18
                            || (*kind == KsymKind::Func
                                && insn.code == 0x85
                                && insn.src() == handover_loader::PSEUDO_KFUNC_CALL),
                        "ksym reference at {} on opcode {:#x}",
                        r.insn,
                        insn.code
                    );
                }
                RefTarget::Call { function } | RefTarget::FuncAddr { function } => {
                    let target = r.insn as i64 + 1 + i64::from(insn.imm);
                    assert!(
                        p.functions.iter().any(|f| &f.name == function && f.start as i64 == target),
                        "call at {} does not land on {function}",
                        r.insn
                    );
                }
            }
        }
        for f in &p.func_info {
            assert!((f.insn as usize) < p.insns.len());
        }
        for l in &p.line_info {
            assert!((l.insn as usize) < p.insns.len());
        }
        for c in &p.core_relocations {
            assert!((c.insn as usize) < p.insns.len());
        }
    }
});
