package eventgen

// SupportPackageIsVersion1 is referenced by generated code to check, at
// compile time, that it was generated for a compatible runtime. When the
// generated code's contract with this package changes, this constant is
// replaced by SupportPackageIsVersion2 and older generated code stops
// compiling: regenerate it with the eventgen command of the same module
// version as this runtime.
const SupportPackageIsVersion1 = true
