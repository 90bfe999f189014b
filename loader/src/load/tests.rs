use super::*;

#[test]
fn dump_tmp() {
    let data = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../programs/build/big_endian_le.o"
    ))
    .unwrap();
    let obj = Object::parse(&data).unwrap();
    let blob = prepare_btf(&obj, &BtfFeatures::BASIC).unwrap().unwrap();
    std::fs::write("/tmp/basic.btf", blob).unwrap();
    let blob = prepare_btf(&obj, &BtfFeatures::ALL).unwrap().unwrap();
    std::fs::write("/tmp/all.btf", blob).unwrap();
}
