//! Offline maintenance of FileStorage files: verify (fstest), dump (fsdump), backup and
//! restore (repozo, [`backup`]).
//!
//! [`fstest`] is fstest's structural checker, [`deep`] the further checks of
//! `verify --deep`, [`dump`] fsdump and its `Dumper`; [`verify`] and [`dump`] are the
//! command edges. They read the file on their own (the engine's reader repairs and
//! refuses where these tools must report), with the layouts of [`crate::storage::format`].

pub mod backup;
pub mod deep;
pub mod dump;
pub mod fstest;
pub mod pack;
pub mod pyrepr;
mod reader;
pub mod target;
pub mod verify;

#[cfg(test)]
mod robustness {
    //! Whatever the bytes, the offline tools report and return: no panic, no endless loop,
    //! no allocation sized by a damaged length.

    use std::io::Write as _;

    use proptest::prelude::*;

    use super::fstest::tests::tiny;
    use super::fstest::{self, Options};
    use super::{deep, dump};

    fn damaged() -> impl Strategy<Value = Vec<u8>> {
        (
            proptest::collection::vec((0usize..446, any::<u8>()), 1..6),
            0usize..460,
            proptest::collection::vec(any::<u8>(), 0..40),
        )
            .prop_map(|(edits, cut, tail)| {
                let mut f = tiny();
                for (at, v) in edits {
                    f[at] = v;
                }
                f.truncate(cut.max(4));
                f.extend(tail);
                f
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn tools_never_panic(bytes in damaged()) {
            let mut tmp = tempfile::NamedTempFile::new().unwrap();
            tmp.write_all(&bytes).unwrap();
            let file = tmp.as_file();
            let mut sink = Vec::new();
            let checked = fstest::check(
                file,
                &mut sink,
                Options { label: "Data.fs", verbosity: 2, progress: &mut |_| {} },
            );
            if checked.is_ok() {
                deep::check(file, None, &mut |_| {}).unwrap();
            }
            let _ = dump::dump(file, "Data.fs", &mut sink, &mut |_| {});
            let _ = dump::dump_fields(file, "Data.fs", &mut sink);
        }
    }
}
