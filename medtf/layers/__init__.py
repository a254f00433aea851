"""medtf.layers"""
