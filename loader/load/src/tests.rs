#![expect(clippy::indexing_slicing, reason = "tests index buffers they built")]

use handover_loader::{KsymResolution, MapSpec, Object};

use super::*;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../../programs/build/{name}.o",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}: run programs/build.sh"))
}

#[test]
fn probe_blobs_parse() {
    for blob in [
        probe_blob(|_, _| {}),
        probe_blob(|b, int| {
            let name = b.string("e");
            let v = b.string("v");
            b.add(name, Kind::Enum64, false, 1, 8, &[v.0, 0, 1]);
            let _ = int;
        }),
    ] {
        let btf = Btf::parse(&blob).unwrap();
        assert_eq!(btf.id_by_name("int", Kind::Int), Some(TypeId(1)));
    }
}

/// Every command a fake backend saw, with its attr bytes.
type Calls = std::sync::Arc<std::sync::Mutex<Vec<(sys::Command, Vec<u8>)>>>;

/// A backend standing in for the kernel: creates succeed with a descriptor of
/// /dev/null, `BPF_PROG_LOAD` fails with `EACCES` and a verifier log, and every
/// `BPF_MAP_CREATE` and `BPF_PROG_LOAD` attr is recorded.
fn refusing_backend(calls: Calls, refuse_btf: bool) -> Bpf {
    use std::os::fd::IntoRawFd;
    let kernel = move |c: sys::Command, attr: &mut [u8], log: Option<&mut [u8]>| {
        calls.lock().unwrap().push((c, attr.to_vec()));
        let refuse = |text: &[u8], log: Option<&mut [u8]>| {
            if let Some(log) = log {
                log[..text.len()].copy_from_slice(text);
            }
            Err(std::io::Error::from_raw_os_error(
                handover_sys::errno::EACCES,
            ))
        };
        match c {
            sys::Command::BtfLoad if refuse_btf => refuse(b"[3] STRUCT x: bad size\0", log),
            sys::Command::ProgLoad => refuse(b"0: R1 invalid mem access 'scalar'\0", log),
            _ => {
                let fd = std::fs::File::open("/dev/null").unwrap().into_raw_fd();
                Ok(i64::from(fd))
            }
        }
    };
    // SAFETY: the fake kernel returns errnos, or a descriptor of /dev/null it just
    // opened and gave up with `into_raw_fd`.
    #[allow(unsafe_code, reason = "a fake backend")]
    let backend = unsafe { sys::FnBackend::new(kernel) };
    Bpf::with_backend(backend)
}

/// A backend standing in for a kernel older than 5.13, as Linux 5.10 answers: a program
/// that takes a function's address (`ld_imm64` with `BPF_PSEUDO_FUNC`) is refused with
/// `EINVAL`, since its verifier counts only called functions as subprograms and so
/// finds more `func_info` records than subprograms; every other command succeeds with
/// a descriptor of /dev/null. The name of every program it refused is recorded.
fn kernel_without_func_addresses(refused: std::sync::Arc<std::sync::Mutex<Vec<String>>>) -> Bpf {
    use std::os::fd::IntoRawFd;
    let kernel = move |c: sys::Command, attr: &mut [u8], log: Option<&mut [u8]>| {
        if c == sys::Command::ProgLoad {
            // bpf_attr: insn_cnt at 4, insns (a pointer) at 8, prog_name at 48.
            let count = word(attr, 4) as usize;
            let at = u64::from_ne_bytes(attr[8..16].try_into().unwrap());
            // SAFETY: the loader's attr points at `count` instructions it owns for the
            // duration of the call.
            #[allow(unsafe_code, reason = "reading the instructions the attr points at")]
            let bytes = unsafe { std::slice::from_raw_parts(at as *const u8, count * 8) };
            let takes_address = bytes.chunks_exact(8).any(|i| {
                i[0] == handover_uapi::LD_IMM64 && i[1] >> 4 == handover_uapi::PSEUDO_FUNC
            });
            if takes_address {
                let name = attr[48..64].split(|&b| b == 0).next().unwrap_or_default();
                refused
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(name).into_owned());
                let text = b"number of funcs in func_info doesn't match number of subprogs\0";
                if let Some(log) = log {
                    log[..text.len()].copy_from_slice(text);
                }
                return Err(std::io::Error::from_raw_os_error(
                    handover_sys::errno::EINVAL,
                ));
            }
        }
        let fd = std::fs::File::open("/dev/null").unwrap().into_raw_fd();
        Ok(i64::from(fd))
    };
    // SAFETY: the fake kernel returns errnos, or a descriptor of /dev/null it just
    // opened and gave up with `into_raw_fd`.
    #[allow(unsafe_code, reason = "a fake backend")]
    let backend = unsafe { sys::FnBackend::new(kernel) };
    Bpf::with_backend(backend)
}

#[test]
fn a_kernel_without_function_addresses_is_named_as_what_refused_a_callback() {
    // programs/subprogs.c: xdp_second hands loop_step to bpf_loop and xdp_third hands
    // sum_entry to bpf_for_each_map_elem; xdp_first and xdp_dispatch take no address.
    let data = fixture("subprogs");
    let obj = Object::parse(&data).unwrap();
    let refused = std::sync::Arc::default();
    let bpf = kernel_without_func_addresses(std::sync::Arc::clone(&refused));
    let options = LoadOptions {
        btf_features: Some(BtfFeatures::ALL),
        keep_going: true,
        ..LoadOptions::default()
    };
    let loaded = load(&bpf, &obj, options).unwrap();
    let loaded_names: Vec<&str> = loaded.programs.keys().map(String::as_str).collect();
    assert_eq!(loaded_names, ["xdp_dispatch", "xdp_first"]);
    let mut lacking = Vec::new();
    for (program, err) in &loaded.failed {
        let LoadError::KernelLacks { lacks, source, .. } = err else {
            panic!("{program}: {err}")
        };
        let Lack::FuncAddress { function } = &**lacks;
        assert_eq!(source.errno(), Some(handover_sys::errno::EINVAL));
        assert!(source.log().unwrap().contains("func_info"), "{source}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("passes function {function} by address"))
                && text.contains("BPF_PSEUDO_FUNC"),
            "{text}"
        );
        lacking.push((program.as_str(), function.as_str()));
    }
    assert_eq!(
        lacking,
        [("xdp_second", "loop_step"), ("xdp_third", "sum_entry")]
    );
    // The load probed once, after the first refusal, not once per program.
    let probes = |refused: &[String]| refused.iter().filter(|n| *n == "func_addr").count();
    assert_eq!(probes(&refused.lock().unwrap()), 1, "{refused:?}");
    assert!(!probe_func_addresses(&bpf));
    assert_eq!(probes(&refused.lock().unwrap()), 2, "{refused:?}");
}

fn word(attr: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(attr[at..at + 4].try_into().unwrap())
}

#[test]
fn a_refused_program_is_named_with_its_verifier_log() {
    // programs/sockops.c: two BTF-defined maps (sockhash, hash) and three programs.
    let data = fixture("sockops");
    let obj = Object::parse(&data).unwrap();
    let calls = Calls::default();
    let bpf = refusing_backend(calls.clone(), false);
    let options = LoadOptions {
        btf_features: Some(BtfFeatures::ALL),
        ..LoadOptions::default()
    };
    let err = load(&bpf, &obj, options).unwrap_err();
    let first = &obj.programs()[0];
    let LoadError::ProgramLoad {
        program, source, ..
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(program, &first.name);
    assert!(source.log().unwrap().contains("invalid mem access"));

    let calls = calls.lock().unwrap();
    let creates: Vec<&Vec<u8>> = calls
        .iter()
        .filter(|(c, _)| *c == sys::Command::MapCreate)
        .map(|(_, a)| a)
        .collect();
    assert_eq!(creates.len(), obj.maps().len());
    for (attr, spec) in creates.iter().zip(obj.maps()) {
        // map_type, key_size, value_size, max_entries, then btf_fd and type ids.
        assert_eq!(word(attr, 0), u32::from(spec.map_type), "{}", spec.name);
        assert_eq!(word(attr, 4), spec.key_size);
        assert_eq!(word(attr, 8), spec.value_size);
        assert_eq!(word(attr, 12), spec.max_entries);
        let name_end = 28 + kernel_name(&spec.name).len();
        assert_eq!(&attr[28..name_end], kernel_name(&spec.name).as_bytes());
        let typed = map_btf_ids(spec, &BtfFeatures::ALL);
        assert_eq!(
            word(attr, 48) != 0,
            typed.is_some(),
            "{}: btf_fd",
            spec.name
        );
        if let Some((key, value)) = typed {
            assert_eq!((word(attr, 52), word(attr, 56)), (key, value));
        }
    }
    // The program went with its BTF, func_info and line_info, and its attach type.
    let (_, prog) = calls
        .iter()
        .find(|(c, _)| *c == sys::Command::ProgLoad)
        .unwrap();
    assert_eq!(word(prog, 0), u32::from(first.prog_type));
    assert_eq!(
        word(prog, 68),
        first.expected_attach_type.map_or(0, u32::from)
    );
    assert_ne!(word(prog, 72), 0, "prog_btf_fd");
    assert_eq!(word(prog, 76), 8, "func_info_rec_size");
    assert_eq!(word(prog, 88) as usize, first.func_info.len());
    assert_eq!(word(prog, 92), 16, "line_info_rec_size");
    assert_eq!(word(prog, 104) as usize, first.line_info.len());
}

#[test]
fn a_refused_btf_is_optional_by_default_and_maps_are_created_without_it() {
    // programs/sockops.c: two BTF-defined maps, then programs the fake kernel refuses.
    let data = fixture("sockops");
    let obj = Object::parse(&data).unwrap();
    let calls = Calls::default();
    let bpf = refusing_backend(calls.clone(), true);
    let options = LoadOptions {
        btf_features: Some(BtfFeatures::ALL),
        ..LoadOptions::default()
    };
    let err = load(&bpf, &obj, options).unwrap_err();
    assert!(
        matches!(err, LoadError::ProgramLoad { .. }),
        "the load goes on past the BTF refusal: {err}"
    );
    let calls = calls.lock().unwrap();
    let creates: Vec<&Vec<u8>> = calls
        .iter()
        .filter(|(c, _)| *c == sys::Command::MapCreate)
        .map(|(_, a)| a)
        .collect();
    assert_eq!(creates.len(), obj.maps().len());
    for attr in creates {
        // bpf_attr.btf_fd, btf_key_type_id, btf_value_type_id
        assert_eq!(
            (word(attr, 48), word(attr, 52), word(attr, 56)),
            (0, 0, 0),
            "a map created with BTF after the kernel refused it"
        );
    }
}

#[test]
fn a_refused_btf_stops_a_load_that_requires_it_with_the_kernel_log() {
    let data = fixture("sockops");
    let obj = Object::parse(&data).unwrap();
    let calls = Calls::default();
    let bpf = refusing_backend(calls.clone(), true);
    let options = LoadOptions {
        btf_features: Some(BtfFeatures::ALL),
        require_btf: true,
        ..LoadOptions::default()
    };
    let err = load(&bpf, &obj, options).unwrap_err();
    let LoadError::BtfLoad { source } = &err else {
        panic!("{err}")
    };
    assert!(source.log().unwrap().contains("bad size"));
    assert!(
        calls
            .lock()
            .unwrap()
            .iter()
            .all(|(c, _)| *c == sys::Command::BtfLoad),
        "nothing is created after the BTF is refused"
    );
}

#[test]
fn a_map_given_for_reuse_must_exist_in_the_object() {
    let data = fixture("sockops");
    let obj = Object::parse(&data).unwrap();
    let calls = Calls::default();
    let bpf = refusing_backend(calls, false);
    let mut reuse = HashMap::new();
    reuse.insert(
        "no_such_map".to_owned(),
        std::sync::Arc::new(OwnedFd::from(std::fs::File::open("/dev/null").unwrap())),
    );
    let options = LoadOptions {
        btf_features: Some(BtfFeatures::ALL),
        reuse_maps: reuse,
        ..LoadOptions::default()
    };
    let err = load(&bpf, &obj, options).unwrap_err();
    assert!(
        matches!(&err, LoadError::ReusedMap { map, .. } if map == "no_such_map"),
        "{err}"
    );
}

/// What the kernel would report for a map created from `spec` with these two values.
fn info_of(spec: &MapSpec, max_entries: u32, flags: u32) -> sys::MapInfo {
    let mut info = sys::MapInfo::default();
    info.map_type = Some(spec.map_type);
    info.map_type_raw = spec.map_type.into();
    info.id = 1;
    info.key_size = spec.key_size;
    info.value_size = spec.value_size;
    info.max_entries = max_entries;
    info.flags = flags;
    info.map_extra = spec.map_extra;
    info
}

#[test]
fn reused_maps_are_compared_with_what_creation_gives_not_with_the_definition() {
    let data = fixture("diff/kernel_adjusted.old");
    let obj = Object::parse(&data).unwrap();
    // A perf event array defined without max_entries has one slot per CPU.
    let perf = obj.map("perf").unwrap();
    assert_eq!(perf.max_entries, 0);
    assert_eq!(
        reused_map_differences(&info_of(perf, 8, perf.flags), perf, 4096, 8),
        Vec::<String>::new()
    );
    assert_eq!(
        reused_map_differences(&info_of(perf, 4, perf.flags), perf, 4096, 8),
        ["max_entries 4 (object: 8)"]
    );
    // A ring buffer is created with its size rounded up to a page multiple.
    let events = obj.map("events").unwrap();
    assert_eq!(events.max_entries, 4000);
    assert!(
        reused_map_differences(&info_of(events, 4096, events.flags), events, 4096, 8).is_empty()
    );
}

#[test]
fn reused_maps_ignore_the_descriptor_access_flags_the_kernel_clears() {
    let data = fixture("diff/kernel_adjusted.old");
    let obj = Object::parse(&data).unwrap();
    let mut spec = obj.map("perf").unwrap().clone();
    spec.max_entries = 8;
    let kernel_flags = spec.flags;
    spec.flags |= sys::map_flags::RDONLY;
    assert!(reused_map_differences(&info_of(&spec, 8, kernel_flags), &spec, 4096, 8).is_empty());
    spec.flags = kernel_flags | sys::map_flags::WRONLY;
    assert!(reused_map_differences(&info_of(&spec, 8, kernel_flags), &spec, 4096, 8).is_empty());
    // Flags the map itself keeps still count.
    let other = kernel_flags | sys::map_flags::NO_PREALLOC;
    assert_eq!(
        reused_map_differences(&info_of(&spec, 8, other), &spec, 4096, 8),
        [format!("flags {other} (object: {kernel_flags})")]
    );
}

/// A kernel BTF with what programs/ksyms.c and programs/ksym_vars.c use, less the
/// functions named in `without`; `bpf_prog_active` is a `VAR` of type `var_kind`
/// (`Int` as in the kernel, or `Struct` to be incompatible with the object's `int`).
#[test]
fn ksyms_resolve_against_the_running_kernel_btf() {
    let Ok(raw) = std::fs::read(VMLINUX_BTF) else {
        let _ = std::io::Write::write_fmt(
            &mut std::io::stderr(),
            format_args!(
                "\nSKIPPED: ksyms_resolve_against_the_running_kernel_btf (no {VMLINUX_BTF})\n"
            ),
        );
        return;
    };
    let kernel = Btf::parse(&raw).unwrap();
    let Ok(kallsyms) = std::fs::read_to_string(KALLSYMS) else {
        let _ = std::io::Write::write_fmt(
            &mut std::io::stderr(),
            format_args!(
                "\nSKIPPED: ksyms_resolve_against_the_running_kernel_btf (no {KALLSYMS})\n"
            ),
        );
        return;
    };
    let lookup = |name: &str| kallsyms_address(&kallsyms, name);
    for (file, program) in [("ksyms", "ksyms"), ("ksym_vars", "ksym_vars")] {
        let data = fixture(file);
        let obj = Object::parse(&data).unwrap();
        let spec = obj.program(program).unwrap();
        let mut insns = spec.insns.clone();
        let resolved = resolve_ksyms(spec, &mut insns, obj.btf(), &kernel, &lookup).unwrap();
        for (name, res) in resolved {
            if let KsymResolution::Address(addr) = res {
                assert_eq!(lookup(&name), Ok(Some(addr)), "{name}");
            } else if name.starts_with("handover_missing") {
                assert_eq!(res, KsymResolution::Missing, "{name}");
            } else {
                let id = kernel
                    .id_by_name(&name, Kind::Var)
                    .or_else(|| kernel.id_by_name(&name, Kind::Func))
                    .unwrap();
                assert_eq!(res, KsymResolution::BtfId(id.0), "{name}");
            }
        }
    }
}

#[test]
fn programs_in_sections_without_a_type_are_all_named_before_anything_is_created() {
    // programs/custom_sections.c: a cgroup/connect4 program, two tail-call targets in
    // cgroup/connect4/ROUTE_TAIL_CALL_n, and programs in xdp_custom and tc_custom.
    let data = fixture("custom_sections");
    let obj = Object::parse(&data).unwrap();
    let calls = Calls::default();
    let bpf = refusing_backend(calls.clone(), false);
    let options = LoadOptions {
        btf_features: Some(BtfFeatures::ALL),
        ..LoadOptions::default()
    };
    let err = load(&bpf, &obj, options).unwrap_err();
    let LoadError::UnknownProgramTypes { sections } = &err else {
        panic!("{err}")
    };
    let named: Vec<(&str, Vec<&str>)> = sections
        .iter()
        .map(|s| {
            (
                s.section.as_str(),
                s.programs.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        named,
        [
            ("cgroup/connect4/ROUTE_TAIL_CALL_1", vec!["connect_route"]),
            ("cgroup/connect4/ROUTE_TAIL_CALL_2", vec!["connect_finish"]),
            ("xdp_custom", vec!["xdp_custom_prog"]),
            ("tc_custom", vec!["tc_custom_prog"]),
        ]
    );
    let text = err.to_string();
    assert!(
        text.starts_with("4 program section(s) have names that give no program type"),
        "{text}"
    );
    assert!(
        text.contains("--program-type SECTION=TYPE[:ATTACH]"),
        "{text}"
    );
    assert!(!text.contains("LoadOptions"), "{text}");
    assert!(calls.lock().unwrap().is_empty(), "nothing is created");
}

#[test]
fn with_keep_going_each_program_has_its_own_result() {
    let data = fixture("custom_sections");
    let obj = Object::parse(&data).unwrap();
    let bpf = refusing_backend(Calls::default(), false);
    // A prefix rule types the tail calls; xdp_custom and tc_custom stay untyped.
    let types = ProgramTypes::new()
        .rule("cgroup/connect4/*=cgroup_sock_addr:cgroup_inet4_connect")
        .unwrap();
    let options = LoadOptions {
        btf_features: Some(BtfFeatures::ALL),
        program_types: types,
        keep_going: true,
        ..LoadOptions::default()
    };
    let copy = options.clone();
    assert_eq!(format!("{copy:?}"), format!("{options:?}"));
    let loaded = load(&bpf, &obj, options).unwrap();
    assert!(loaded.programs.is_empty());
    let why: BTreeMap<&str, String> = loaded
        .failed
        .iter()
        .map(|(k, v)| (k.as_str(), v.to_string()))
        .collect();
    assert_eq!(why.len(), 5, "{why:#?}");
    // The typed ones reached the (refusing) kernel; the others are refused for a type.
    for typed in ["connect_entry", "connect_route", "connect_finish"] {
        assert!(
            why[typed].starts_with(&format!("loading program {typed} (section cgroup/connect4")),
            "{why:#?}"
        );
    }
    assert!(
        why["xdp_custom_prog"].contains("\"xdp_custom\""),
        "{why:#?}"
    );
    assert!(why["tc_custom_prog"].contains("\"tc_custom\""), "{why:#?}");
}

#[test]
fn the_poisoned_instruction_is_read_from_the_verifier_log() {
    let log = "0: R1=ctx() R10=fp0\n\
               0: (85) call bpf_get_current_task#35\n\
               1: (bf) r3 = r0\n\
               2: (85) call unknown#195896080\n\
               invalid func unknown#195896080\n\
               processed 3 insns (limit 1000000)";
    assert_eq!(poisoned_insn(log), Some(2));
    assert_eq!(poisoned_insn("0: (95) exit\nR0 !read_ok"), None);
    // A poisoned call in dead code the verifier never reached is not the reason.
    assert_eq!(
        poisoned_insn("7: (85) call unknown#195896080\nR1 invalid mem access 'scalar'"),
        None
    );
}
