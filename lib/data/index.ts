// The data API: datasets, transforms, the loader, download and the sample data.
export * as transforms from './transforms';
export type { Transform, TransformOp } from './transforms';
export { Dataset, Sample, GetOptions, NativeDataset } from './dataset';
export { STL10, Stl10Options, Stl10Split, STL10_SPLITS, stl10Present } from './stl10';
export { ImageFolder, ImageFolderOptions } from './image_folder';
export { ImageFiles, ImageFilesOptions, decodeImageFile, DecodedImage, DEFAULT_MAX_IMAGE_PIXELS, maxImagePixels } from './image_files';
export { DataLoader, DataLoaderOptions, Batch, IterateOptions, Sampler, permutation } from './dataloader';
export { augmentBatch, AugmentOptions, DeferredAugment } from './augment';
export { downloadStl10, downloadFile, checkStl10Files, md5File, DownloadOptions, STL10_URL, STL10_MD5 } from './download';
export { ensureSampleData, generateSampleStl10, defaultDataRoot, SAMPLE_CLASSES, SampleOptions } from './sample';
