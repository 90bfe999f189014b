//! Attachments the kernel cannot switch are refused by the plan before anything runs:
//! a tcx attachment on a kernel without tcx links (the fake kernel told so), with
//! programs/engine_hooks_v1.c.

mod common;

use common::StateDir;
use handover_engine::{
    AttachPoint, Attachment, Engine, Error, FakeWorld, LockWait, ObjectSource, Options, TcDirection,
};

#[test]
fn a_tcx_attachment_without_tcx_links_is_refused_by_the_plan() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../programs/build/engine_hooks_v1.o");
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run programs/build.sh", path.display()));
    let objects = [ObjectSource::new("hooks.o", bytes)];
    let options = Options {
        attachments: vec![Attachment {
            name: "tc".into(),
            program: "pass_tc".into(),
            point: AttachPoint::Tcx {
                iface: "eth0".into(),
                direction: TcDirection::Egress,
            },
        }],
        ..Options::default()
    };
    let world = FakeWorld::new();
    let dir = StateDir::new("tcx");
    let mut e = Engine::with_kernel(world.process(), &dir.0, LockWait::Refuse).unwrap();
    assert!(
        e.plan(&objects, &options).is_ok(),
        "a kernel with tcx links"
    );
    world.set_tcx_links(false);
    match e.plan(&objects, &options) {
        Err(Error::Options(why)) => {
            assert!(
                why.contains("tc: ") || why.contains("attachment tc"),
                "{why}"
            );
            assert!(why.contains("no tcx links"), "{why}");
        }
        other => panic!("planned a tcx attachment without tcx links: {other:?}"),
    }
    assert!(world.pins().is_empty());
}
