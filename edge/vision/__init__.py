"""edge/vision: frames in, tracked COCO-17 poses out (`stage.PoseStage`).

One file per model with its pre/post-processing (rtmlib style):
`blazepose_detector` (SSD anchors, letterbox, decode, weighted NMS), `blazepose_landmarks`
(ROI, rotated crop, landmark decode, BlazePose 33 -> COCO-17); then `estimator` (multi-person
detect-then-follow loop), `tracker` (ByteTrack), `smoothing` (one-euro), `cleaning` (Ban's
jump rejection + spline fill), `quality` (Tong's filters), `settings` (`VisionSettings`).
"""
