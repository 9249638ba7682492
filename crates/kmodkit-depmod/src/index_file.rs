//! One file of the index set depmod writes: rendered by [`crate::output`],
//! kept by [`crate::cache`], installed by [`crate::write`].

/// One output file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputFile {
    pub name: &'static str,
    pub contents: Vec<u8>,
    /// Text files are what `depmod -n` prints.
    pub text: bool,
}
