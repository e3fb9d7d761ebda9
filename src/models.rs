//! Model names, folders and downloads. (Being written.)
