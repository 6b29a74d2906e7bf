//! The movies a server offers: the files of one folder plus movies handed
//! over in memory (the embedded demo movie), as §7.4 defines them.
//!
//! The folder is the only place on disk this crate reads. Its path is
//! canonicalised once; every file is canonicalised again when it is listed
//! and when it is opened, and anything that resolves outside the folder (a
//! symbolic link pointing elsewhere, a name swapped for such a link after the
//! listing) is left out or refused.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

/// Largest movie name the wire can carry (u8 length).
pub const MAX_NAME_LEN: usize = 255;
/// `0xFFFF` is never an ID (§7.4).
pub const MAX_MOVIES: usize = 65_535;

/// How much of a file is read at a time; a session asks for one chunk per
/// interval, so reading ahead keeps file reads rare.
const READ_AHEAD: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum LibraryError {
    #[error("movie folder {path}: {source}")]
    Folder { path: PathBuf, source: io::Error },
    #[error("movie folder {0} is not a directory")]
    NotADirectory(PathBuf),
}

/// A folder and in-memory movies, listed fresh for every new session so that
/// files added to the folder show up without a restart.
#[derive(Debug, Clone, Default)]
pub struct MovieLibrary {
    folder: Option<PathBuf>,
    embedded: Vec<(String, Bytes)>,
}

/// One offered movie.
#[derive(Debug, Clone)]
pub struct Movie {
    pub name: String,
    pub size: u64,
    source: MovieSource,
}

#[derive(Debug, Clone)]
enum MovieSource {
    Memory(Bytes),
    File { path: PathBuf, folder: Arc<PathBuf> },
}

impl MovieLibrary {
    /// A library with no movies; add some with [`MovieLibrary::with_folder`]
    /// or [`MovieLibrary::add_embedded`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A library that lists the regular files of `folder` (not recursing).
    pub fn with_folder(folder: impl AsRef<Path>) -> Result<Self, LibraryError> {
        let mut lib = Self::new();
        lib.set_folder(folder)?;
        Ok(lib)
    }

    pub fn set_folder(&mut self, folder: impl AsRef<Path>) -> Result<(), LibraryError> {
        let path = folder.as_ref();
        let canonical = path.canonicalize().map_err(|source| LibraryError::Folder {
            path: path.to_owned(),
            source,
        })?;
        if !canonical.is_dir() {
            return Err(LibraryError::NotADirectory(canonical));
        }
        self.folder = Some(canonical);
        Ok(())
    }

    /// Adds a movie held in memory. A file of the same name in the folder
    /// takes precedence, so an operator can replace an embedded movie.
    pub fn add_embedded(&mut self, name: impl Into<String>, data: Bytes) {
        self.embedded.push((name.into(), data));
    }

    /// The movies offered right now, sorted by name (byte order of the
    /// UTF-8), at most [`MAX_MOVIES`]. Their positions are the Movie IDs of a
    /// session created now.
    pub fn movies(&self) -> Vec<Movie> {
        let mut by_name: BTreeMap<String, Movie> = BTreeMap::new();
        for (name, data) in &self.embedded {
            if !acceptable_name(name) || data.is_empty() {
                tracing::warn!(movie = %name, "embedded movie left out: empty or name too long");
                continue;
            }
            by_name.insert(
                name.clone(),
                Movie {
                    name: name.clone(),
                    size: data.len() as u64,
                    source: MovieSource::Memory(data.clone()),
                },
            );
        }
        if let Some(folder) = &self.folder {
            let folder = Arc::new(folder.clone());
            match std::fs::read_dir(folder.as_path()) {
                Ok(entries) => {
                    for entry in entries.flatten() {
                        if let Some(movie) = folder_movie(&folder, &entry) {
                            by_name.insert(movie.name.clone(), movie);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(folder = %folder.display(), error = %e, "cannot list the movie folder")
                }
            }
        }
        if by_name.len() > MAX_MOVIES {
            tracing::warn!(
                found = by_name.len(),
                offered = MAX_MOVIES,
                "too many movies, the rest are left out"
            );
        }
        by_name.into_values().take(MAX_MOVIES).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.movies().is_empty()
    }
}

fn acceptable_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_LEN
}

fn folder_movie(folder: &Arc<PathBuf>, entry: &std::fs::DirEntry) -> Option<Movie> {
    let raw = entry.file_name();
    let Some(name) = raw.to_str() else {
        tracing::info!(file = ?raw, "movie left out: name is not UTF-8");
        return None;
    };
    if !acceptable_name(name) {
        tracing::info!(file = %name, "movie left out: name longer than 255 bytes");
        return None;
    }
    let path = entry.path();
    let resolved = match inside(folder, &path) {
        Ok(p) => p,
        Err(why) => {
            tracing::info!(file = %name, why, "movie left out");
            return None;
        }
    };
    let meta = std::fs::metadata(&resolved).ok()?;
    if !meta.is_file() {
        tracing::debug!(file = %name, "not a regular file, left out");
        return None;
    }
    if meta.len() == 0 {
        tracing::info!(file = %name, "movie left out: empty file");
        return None;
    }
    Some(Movie {
        name: name.to_owned(),
        size: meta.len(),
        source: MovieSource::File {
            path,
            folder: folder.clone(),
        },
    })
}

/// Resolves `path` and checks it is still inside `folder`.
fn inside(folder: &Path, path: &Path) -> Result<PathBuf, &'static str> {
    let resolved = path.canonicalize().map_err(|_| "cannot be resolved")?;
    if resolved.starts_with(folder) && resolved != folder {
        Ok(resolved)
    } else {
        Err("resolves outside the movie folder")
    }
}

impl Movie {
    /// A movie held in memory, outside any library (tests, load generation).
    pub fn in_memory(name: impl Into<String>, data: Bytes) -> Self {
        Movie {
            name: name.into(),
            size: data.len() as u64,
            source: MovieSource::Memory(data),
        }
    }

    /// Opens the movie for reading, checking again that a file still lies
    /// inside the folder.
    pub fn open(&self) -> io::Result<MovieReader> {
        match &self.source {
            MovieSource::Memory(data) => Ok(MovieReader::Memory(data.clone())),
            MovieSource::File { path, folder } => {
                let resolved = inside(folder, path)
                    .map_err(|why| io::Error::new(io::ErrorKind::PermissionDenied, why))?;
                let file = File::open(resolved)?;
                if !file.metadata()?.is_file() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "not a regular file",
                    ));
                }
                Ok(MovieReader::File {
                    file,
                    block: Bytes::new(),
                    block_start: 0,
                })
            }
        }
    }
}

/// Reads a movie by byte ranges, handing out `Bytes` that share one
/// read-ahead buffer.
#[derive(Debug)]
pub enum MovieReader {
    Memory(Bytes),
    File {
        file: File,
        block: Bytes,
        block_start: u64,
    },
}

impl MovieReader {
    /// Exactly `len` bytes from `offset`, or an error if the movie is shorter
    /// (a file that shrank since it was listed).
    pub fn read(&mut self, offset: u64, len: usize) -> io::Result<Bytes> {
        let short = || io::Error::new(io::ErrorKind::UnexpectedEof, "movie shorter than listed");
        match self {
            MovieReader::Memory(data) => {
                let start = usize::try_from(offset).map_err(|_| short())?;
                let end = start.checked_add(len).ok_or_else(short)?;
                if end > data.len() {
                    return Err(short());
                }
                Ok(data.slice(start..end))
            }
            MovieReader::File {
                file,
                block,
                block_start,
            } => {
                let in_block = offset
                    .checked_sub(*block_start)
                    .and_then(|o| usize::try_from(o).ok())
                    .filter(|o| o.saturating_add(len) <= block.len());
                if let Some(o) = in_block {
                    return Ok(block.slice(o..o + len));
                }
                let want = len.max(READ_AHEAD);
                let mut buf = vec![0u8; want];
                file.seek(SeekFrom::Start(offset))?;
                let mut filled = 0;
                while filled < want {
                    let n = file.read(&mut buf[filled..])?;
                    if n == 0 {
                        break;
                    }
                    filled += n;
                }
                if filled < len {
                    return Err(short());
                }
                buf.truncate(filled);
                *block = Bytes::from(buf);
                *block_start = offset;
                Ok(block.slice(0..len))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_regular_non_empty_files_sorted_with_embedded() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.ts"), b"bbbb").unwrap();
        std::fs::write(dir.path().join("a.ts"), b"aa").unwrap();
        std::fs::write(dir.path().join("empty.ts"), b"").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub").join("deep.ts"), b"x").unwrap();
        let mut lib = MovieLibrary::with_folder(dir.path()).unwrap();
        lib.add_embedded("demo.mp4", Bytes::from_static(b"demo"));
        lib.add_embedded("a.ts", Bytes::from_static(b"embedded loses"));
        let movies = lib.movies();
        let names: Vec<(&str, u64)> = movies.iter().map(|m| (m.name.as_str(), m.size)).collect();
        assert_eq!(names, [("a.ts", 2), ("b.ts", 4), ("demo.mp4", 4)]);
        assert_eq!(
            movies[0].open().unwrap().read(0, 2).unwrap().as_ref(),
            b"aa"
        );
        assert_eq!(
            movies[2].open().unwrap().read(1, 3).unwrap().as_ref(),
            b"emo"
        );
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_escaping_the_folder_are_never_read() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"secret").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("inside.ts"), b"inside").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("escape.ts"))
            .unwrap();
        std::os::unix::fs::symlink(dir.path().join("inside.ts"), dir.path().join("alias.ts"))
            .unwrap();
        let lib = MovieLibrary::with_folder(dir.path()).unwrap();
        let names: Vec<String> = lib.movies().into_iter().map(|m| m.name).collect();
        assert_eq!(names, ["alias.ts", "inside.ts"]);
        // A file swapped for an escaping link after the listing is refused
        // at open time.
        let movies = lib.movies();
        std::fs::remove_file(dir.path().join("inside.ts")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("inside.ts"))
            .unwrap();
        let err = movies[1].open().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
    }

    #[test]
    fn file_reader_reads_across_read_ahead_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..READ_AHEAD * 2 + 77).map(|i| (i % 251) as u8).collect();
        std::fs::write(dir.path().join("m"), &data).unwrap();
        let lib = MovieLibrary::with_folder(dir.path()).unwrap();
        let movie = &lib.movies()[0];
        let mut r = movie.open().unwrap();
        let mut out = Vec::new();
        let mut off = 0u64;
        while off < movie.size {
            let n = (movie.size - off).min(1316) as usize;
            out.extend_from_slice(&r.read(off, n).unwrap());
            off += n as u64;
        }
        assert_eq!(out, data);
        assert!(r.read(movie.size, 1).is_err());
    }
}
