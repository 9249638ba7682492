//! placeholder: written in lane yum
