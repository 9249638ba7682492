//! placeholder: written in lane deb
